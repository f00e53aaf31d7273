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
