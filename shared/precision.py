"""The frozen base's device (SAFE_FEDLLM_DEVICE) and compute dtype: bfloat16 on a GPU that supports it or
a CPU that multiplies bf16 natively, else float32.

bf16 pays only on CPUs with bf16 matrix instructions (AMX or AVX-512 BF16): there oneDNN runs bf16 GEMMs
at up to several times the fp32 rate. Without them every bf16 GEMM is emulated — measured on the project's
AVX2-only 2-core machine at 0.95 GFLOP/s against 126 GFLOP/s in fp32 (`bench/local_compute_bench.py`) — so
`auto` picks bf16 only when the instructions are there. The frozen base is cast once (re-casting every
weight at every call, as torch.autocast does, makes generation slower); LoRA parameters and their optimizer
state stay float32 (PEFT keeps adapter weights in fp32 on a bf16 base).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

# torch is imported where a dtype is resolved: shared.config (and light clients) need not load it.
if TYPE_CHECKING:
    import torch
    from torch import nn

ComputeDtype = Literal["auto", "float32", "bfloat16"]
DeviceSetting = Literal["auto", "cpu", "cuda"]
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (and torch's oneDNN says it can use them)."""
    import torch

    mkldnn_ok = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()
    return bool(mkldnn_ok) and any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)


def resolve_device(setting: DeviceSetting) -> torch.device:
    """cuda when asked (an error if torch sees no GPU) or, for auto, when torch sees one; else cpu."""
    import torch

    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("SAFE_FEDLLM_DEVICE=cuda, but torch sees no CUDA device (a CPU build of torch?)")
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def resolve_compute_dtype(setting: ComputeDtype, device: torch.device | None = None) -> torch.dtype:
    """float32/bfloat16 as set; auto: bf16 on a GPU that supports it, on a CPU only with bf16 units."""
    import torch

    if setting == "float32":
        return torch.float32
    if setting == "bfloat16":
        return torch.bfloat16
    if device is not None and device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if native_bf16() else torch.float32


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's (first) parameter: where its inputs must go."""
    return next(model.parameters()).device


def cast_parameters(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast the model's floating parameters to `dtype`, leaving its buffers as they are.

    `model.to(dtype)` would also cast the rotary embedding's `inv_freq` buffer (float32 by design, and what
    a model rebuilt from shared weights recomputes): bf16 frequencies shift every position's rotation, so
    the driver's base and a client's rebuilt copy of it would give different logits.
    """
    for parameter in model.parameters():  # tied weights appear once
        if parameter.is_floating_point() and parameter.dtype != dtype:
            parameter.data = parameter.data.to(dtype)
