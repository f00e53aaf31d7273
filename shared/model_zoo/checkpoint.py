"""Bring your own model: a local `save_pretrained` causal-LM checkpoint directory, loaded offline.

A directory holds `config.json`, the weights as `*.safetensors` (never pickle: `.bin` checkpoints are
refused) and the tokenizer files; `alignment/` beside them may hold a PEFT safety-alignment adapter.
Only the families the paper uses and their small relatives load, and never with remote code: their
modelling code ships with transformers, and their LoRA targets (PEFT's defaults) are known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from shared.config import runtime_settings

# config.model_type -> PEFT's default LoRA targets for it (peft.utils.constants, identical for all four).
FAMILIES: dict[str, tuple[str, ...]] = {
    "llama": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
    "mistral": ("q_proj", "v_proj"),
    "gemma": ("q_proj", "v_proj"),
}
CHECKPOINT_ALIGNMENT_DIRNAME = "alignment"


class CheckpointError(ValueError):
    """A model directory that cannot be loaded safely (missing files, pickle weights, unknown family)."""


@dataclass(frozen=True)
class ModelSource:
    name: str  # built-in name, registered name, or the directory's own name
    directory: Path | None  # None: a built-in model


def resolve_model(model: str, builtins: Sequence[str]) -> ModelSource:
    """A built-in name, a name in the operator's registry (SAFE_FEDLLM_MODELS), or a directory."""
    if model in builtins:
        return ModelSource(model, None)
    registered = runtime_settings().models
    if model in registered:
        return ModelSource(model, Path(registered[model]).expanduser().resolve())
    path = Path(model).expanduser()
    if path.is_dir():
        return ModelSource(path.resolve().name, path.resolve())
    names = ", ".join([*builtins, *sorted(registered)])
    raise ValueError(
        f"Unknown model {model!r}: not a known name ({names}) nor a checkpoint directory; "
        'map a name to a directory with SAFE_FEDLLM_MODELS=\'{"name": "/path"}\''
    )


def default_target_modules(model_type: str) -> tuple[str, ...]:
    if model_type not in FAMILIES:
        raise CheckpointError(
            f"model family {model_type!r} is not supported; supported: {', '.join(FAMILIES)}"
        )
    return FAMILIES[model_type]


def check_checkpoint(directory: Path) -> str:
    """The directory's model family, after checking it is a loadable safetensors checkpoint."""
    if not (directory / "config.json").is_file():
        raise CheckpointError(f"{directory}: no config.json (save the model with save_pretrained)")
    if not any(directory.glob("*.safetensors")):
        pickled = sorted(p.name for p in directory.glob("*.bin"))
        detail = f" (found {', '.join(pickled)}: pickle weights are never loaded)" if pickled else ""
        raise CheckpointError(f"{directory}: no *.safetensors weights{detail}")
    config = AutoConfig.from_pretrained(directory, trust_remote_code=False, local_files_only=True)
    default_target_modules(config.model_type)
    return str(config.model_type)


def load_checkpoint(directory: Path) -> PreTrainedModel:
    """The checkpoint in the dtype it was stored in (the fingerprint samples those values), on the CPU."""
    check_checkpoint(directory)
    model = AutoModelForCausalLM.from_pretrained(
        directory, dtype="auto", use_safetensors=True, trust_remote_code=False, local_files_only=True
    )
    if not isinstance(model, PreTrainedModel):
        raise CheckpointError(f"{directory}: not a causal LM")
    if any(p.dtype not in (torch.float32, torch.bfloat16, torch.float16) for p in model.parameters()):
        raise CheckpointError(f"{directory}: quantized weights are not supported")
    return model


def load_checkpoint_tokenizer(directory: Path) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{directory}: no usable tokenizer files ({error})") from error
    return tokenizer
