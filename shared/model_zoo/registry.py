"""Model names -> loaded (model, tokenizer), with the shipped safety-alignment adapter merged in."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from shared.config import runtime_settings
from shared.model_zoo.smollm2 import load_smollm2_tokenizer, load_smollm2_weights
from shared.model_zoo.tiny import load_tiny_llama
from shared.precision import ComputeDtype, cast_parameters, resolve_compute_dtype

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
ALIGNMENT_DIR = ARTIFACTS_DIR / "alignment"
MODEL_NAMES = ("smollm2-135m", "tiny-llama")


def alignment_adapter_dir(model_name: str) -> Path:
    return ALIGNMENT_DIR / model_name


@dataclass
class LoadedModel:
    name: str
    model: LlamaForCausalLM
    tokenizer: PreTrainedTokenizerBase
    aligned: bool
    fingerprint: str  # identifies the exact base weights (+ alignment) a LoRA or probe was made for


def load_tokenizer(name: str, cache_dir: Path | None = None) -> PreTrainedTokenizerBase:
    _check_name(name)
    tokenizer = load_smollm2_tokenizer(cache_dir or runtime_settings().cache_dir)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(
    name: str,
    aligned: bool | None = None,
    cache_dir: Path | None = None,
    compute_dtype: ComputeDtype | None = None,
) -> LoadedModel:
    """Load a base model by name, frozen, in eval mode, in the compute dtype (SAFE_FEDLLM_COMPUTE_DTYPE).

    aligned=None merges the shipped alignment adapter when one exists for this model; True requires it.
    The alignment adapter is merged in float32 and the fingerprint taken before any cast, so a probe made
    on one dtype fits the other.
    """
    _check_name(name)
    cache = cache_dir or runtime_settings().cache_dir
    tokenizer = load_tokenizer(name, cache)
    builders: dict[str, Callable[[], LlamaForCausalLM]] = {
        "smollm2-135m": lambda: load_smollm2_weights(cache),
        "tiny-llama": lambda: load_tiny_llama(tokenizer, cache, runtime_settings().data_dir),
    }
    model = builders[name]()
    adapter_dir = alignment_adapter_dir(name)
    has_adapter = (adapter_dir / "adapter_model.safetensors").is_file()
    if aligned and not has_adapter:
        raise FileNotFoundError(
            f"No alignment adapter for {name!r} at {adapter_dir}; "
            f"create it with: safe-fedllm align --model {name}"
        )
    use_adapter = has_adapter if aligned is None else aligned
    if use_adapter:
        model = merge_adapter(model, adapter_dir)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    fingerprint = _fingerprint(name, model, adapter_dir if use_adapter else None)
    dtype = resolve_compute_dtype(compute_dtype or runtime_settings().compute_dtype)
    if dtype != torch.float32:
        cast_parameters(model, dtype)  # buffers (rotary inv_freq) stay float32
    # PEFT writes this into adapter_config.json (base_model_name_or_path); the probe service matches on it.
    model.config._name_or_path = model.name_or_path = name
    return LoadedModel(name, model, tokenizer, use_adapter, fingerprint)


def merge_adapter(model: LlamaForCausalLM, adapter_dir: Path) -> LlamaForCausalLM:
    from peft import PeftModel

    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    assert isinstance(merged, LlamaForCausalLM)
    return merged


def _fingerprint(name: str, model: LlamaForCausalLM, adapter_dir: Path | None) -> str:
    digest = hashlib.sha256(name.encode())
    digest.update(json.dumps(model.config.to_diff_dict(), sort_keys=True, default=str).encode())
    # A cheap, stable content sample: rows of the embedding matrix identify the checkpoint.
    embed = model.get_input_embeddings().weight.detach()  # type: ignore[operator]  # a Module's Parameter
    digest.update(embed[:: max(1, embed.shape[0] // 256)].to(torch.float32).numpy().tobytes())
    if adapter_dir is not None:
        digest.update((adapter_dir / "adapter_model.safetensors").read_bytes())
    return digest.hexdigest()[:16]


def _check_name(name: str) -> None:
    if name not in MODEL_NAMES:
        raise ValueError(f"Unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
