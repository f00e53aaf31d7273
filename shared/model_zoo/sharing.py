"""Frozen base weights as a flat dict of numpy arrays, so Ray's object store can share them zero-copy.

The driver publishes the (aligned) base once with `ray.put(export_frozen_base(model))`; each client actor
rebuilds a model whose parameters are views of that shared, read-only memory. Only LoRA weights are
private per client, so ten SmolLM2 clients cost one copy of the base, not ten.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel


@dataclass
class FrozenBase:
    config: dict
    tensors: dict[str, np.ndarray]
    fingerprint: str
    dtype: str = "float32"  # bfloat16: tensors hold the raw 16-bit words


def export_frozen_base(model: PreTrainedModel, fingerprint: str) -> FrozenBase:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}  # a GPU base travels via host memory
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # tied: one copy travels, re-tied on the other side
    # numpy has no bfloat16: a bf16 base travels as its raw 16-bit words and is viewed back on arrival
    tensors = {
        k: (
            v.detach().contiguous().view(torch.int16)
            if v.dtype == torch.bfloat16
            else v.detach().to(torch.float32)
        )
        .contiguous()
        .numpy()
        for k, v in state.items()
    }
    dtype = "bfloat16" if any(v.dtype == torch.bfloat16 for v in state.values()) else "float32"
    return FrozenBase(model.config.to_dict(), tensors, fingerprint, dtype)


def materialize_frozen_base(base: FrozenBase) -> PreTrainedModel:
    """The base as views of the shared arrays, on the CPU (move it to a GPU with `.to`: that copies)."""
    fields = {k: v for k, v in base.config.items() if k not in ("quantization_config", "model_type")}
    config = AutoConfig.for_model(base.config.get("model_type", "llama"), **fields)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only shared buffers are fine: nothing writes them
        tensors = {
            k: torch.from_numpy(v).view(torch.bfloat16) if base.dtype == "bfloat16" else torch.from_numpy(v)
            for k, v in base.tensors.items()
        }
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    allowed_missing = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - allowed_missing or unexpected:
        raise ValueError(f"frozen base does not fit the config: missing {missing}, unexpected {unexpected}")
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    # Non-persistent buffers (rotary frequencies) are not in the state dict; rebuild their modules on the CPU.
    for name, module in list(model.named_modules()):
        if any(b.is_meta for b in module.buffers(recurse=False)):
            parent, _, attribute = name.rpartition(".")
            setattr(model.get_submodule(parent), attribute, type(module)(config=config))
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model
