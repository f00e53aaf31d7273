"""The compute dtype: bf16 only where the CPU has bf16 matrix instructions, unless asked for explicitly."""

import pytest
import torch

from shared import precision


@pytest.mark.parametrize(
    ("flags", "mkldnn", "expected"),
    [
        ({"avx2"}, True, torch.float32),  # AVX2 only: bf16 would be emulated
        ({"avx512_bf16"}, True, torch.bfloat16),
        ({"amx_bf16", "avx512f"}, True, torch.bfloat16),
        ({"amx_bf16"}, False, torch.float32),  # oneDNN cannot use them
    ],
)
def test_auto_picks_bf16_only_with_native_support(monkeypatch, flags, mkldnn, expected):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: mkldnn, raising=False)
    assert precision.resolve_compute_dtype("auto") == expected


def test_explicit_settings_are_obeyed():
    assert precision.resolve_compute_dtype("float32") == torch.float32
    assert precision.resolve_compute_dtype("bfloat16") == torch.bfloat16


@pytest.mark.parametrize(
    ("setting", "gpu", "expected"),
    [("auto", False, "cpu"), ("auto", True, "cuda"), ("cpu", True, "cpu"), ("cuda", True, "cuda")],
)
def test_the_device_setting(monkeypatch, setting, gpu, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    assert precision.resolve_device(setting).type == expected


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="SAFE_FEDLLM_DEVICE=cuda, but torch sees no CUDA device"):
        precision.resolve_device("cuda")


@pytest.mark.parametrize(("bf16_gpu", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_on_a_gpu_follows_the_gpus_bf16_support_not_the_cpus(monkeypatch, bf16_gpu, expected):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16_gpu)
    assert precision.resolve_compute_dtype("auto", torch.device("cuda")) == expected


def test_casting_parameters_keeps_buffers_float32():
    module = torch.nn.Linear(3, 2)
    module.register_buffer("inv_freq", torch.tensor([1.0, 1e-4]))
    precision.cast_parameters(module, torch.bfloat16)
    assert module.weight.dtype == module.bias.dtype == torch.bfloat16
    assert module.inv_freq.dtype == torch.float32
    assert module.inv_freq[1].item() == pytest.approx(1e-4, rel=1e-7)  # bf16 keeps 3 digits of it
