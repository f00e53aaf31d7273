"""Models by name or directory -> loaded (model, tokenizer), with an alignment adapter merged in.

A model is either built in (`smollm2-135m`, the embedded default; `tiny-llama`, for tests), a name the
operator maps to a directory (SAFE_FEDLLM_MODELS), or a directory: any local `save_pretrained` causal-LM
checkpoint of a supported family (`shared.model_zoo.checkpoint`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from shared.config import runtime_settings
from shared.model_zoo.checkpoint import (
    CHECKPOINT_ALIGNMENT_DIRNAME,
    ModelSource,
    load_checkpoint,
    load_checkpoint_tokenizer,
    resolve_model,
)
from shared.model_zoo.smollm2 import load_smollm2_tokenizer, load_smollm2_weights
from shared.model_zoo.tiny import load_tiny_llama
from shared.precision import (
    ComputeDtype,
    DeviceSetting,
    cast_parameters,
    resolve_compute_dtype,
    resolve_device,
)

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
ALIGNMENT_DIR = ARTIFACTS_DIR / "alignment"
MODEL_NAMES = ("smollm2-135m", "tiny-llama")


def alignment_adapter_dir(model: str) -> Path:
    """Where the model's alignment adapter lives: shipped for built-ins, `<checkpoint>/alignment` else."""
    source = resolve_model(model, MODEL_NAMES)
    if source.directory is None:
        return ALIGNMENT_DIR / source.name
    return source.directory / CHECKPOINT_ALIGNMENT_DIRNAME


def model_key(model: str) -> str:
    """The name a model (built-in, registered or directory) goes by in file names, adapters and manifests."""
    return resolve_model(model, MODEL_NAMES).name


@dataclass
class LoadedModel:
    name: str  # what adapters (base_model_name_or_path), manifests and the REST `model` field call it
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    aligned: bool
    fingerprint: str  # identifies the exact base weights (+ alignment) a LoRA or probe was made for
    family: str = "llama"  # config.model_type


def load_tokenizer(model: str, cache_dir: Path | None = None) -> PreTrainedTokenizerBase:
    source = resolve_model(model, MODEL_NAMES)
    if source.directory is not None:
        tokenizer = load_checkpoint_tokenizer(source.directory)
    else:
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
    device: DeviceSetting | None = None,
    adapter_dir: Path | None = None,
) -> LoadedModel:
    """Load a base model by name or directory, frozen, in eval mode, in the compute dtype, on the device.

    aligned=None merges the model's alignment adapter when one exists; True requires it. The adapter is
    merged in float32 and the fingerprint taken before any cast, so a probe made on one dtype fits the other.
    `adapter_dir`: another alignment adapter than the model's own (a candidate under test, #28).
    dtype and device default to SAFE_FEDLLM_COMPUTE_DTYPE and SAFE_FEDLLM_DEVICE.
    """
    source = resolve_model(name, MODEL_NAMES)
    settings = runtime_settings()
    cache = cache_dir or settings.cache_dir
    tokenizer = load_tokenizer(name, cache)
    builders: dict[str, Callable[[], PreTrainedModel]] = {
        "smollm2-135m": lambda: load_smollm2_weights(cache),
        "tiny-llama": lambda: load_tiny_llama(tokenizer, cache, settings.data_dir),
    }
    model = builders[source.name]() if source.directory is None else load_checkpoint(source.directory)
    adapter_dir = adapter_dir or alignment_adapter_dir(name)
    has_adapter = (adapter_dir / "adapter_model.safetensors").is_file()
    if aligned and not has_adapter:
        raise FileNotFoundError(
            f"No alignment adapter for {source.name!r} at {adapter_dir}; "
            f"create it with: safe-fedllm align --model {name}"
        )
    use_adapter = has_adapter if aligned is None else aligned
    if use_adapter:
        cast_parameters(model, torch.float32)
        model = merge_adapter(model, adapter_dir)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    fingerprint = _fingerprint(source, model, adapter_dir if use_adapter else None)
    target = resolve_device(device or settings.device)
    dtype = resolve_compute_dtype(compute_dtype or settings.compute_dtype, target)
    cast_parameters(model, dtype)  # buffers (rotary inv_freq) stay float32
    if target.type != "cpu":
        model.to(target)  # type: ignore[arg-type]  # transformers' stub wraps .to for dtypes only
    # PEFT writes this into adapter_config.json (base_model_name_or_path); the probe service matches on it.
    model.config._name_or_path = model.name_or_path = source.name
    return LoadedModel(source.name, model, tokenizer, use_adapter, fingerprint, model.config.model_type)


def merge_adapter(model: PreTrainedModel, adapter_dir: Path) -> PreTrainedModel:
    from peft import PeftModel

    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    assert isinstance(merged, PreTrainedModel)
    return merged


def _fingerprint(source: ModelSource, model: PreTrainedModel, adapter_dir: Path | None) -> str:
    """A digest of the config and a sample of the stored weights (before any cast).

    Built-ins keep their original digest (the name and embedding rows) so shipped probes stay valid; a
    checkpoint directory's covers a strided sample of every tensor, not its name: a renamed or moved
    directory is the same base, and two fine-tunes sharing their embeddings are not.
    """
    config = json.dumps(model.config.to_diff_dict(), sort_keys=True, default=str).encode()
    if source.directory is None:
        digest = hashlib.sha256(source.name.encode())
        digest.update(config)
        embed = model.get_input_embeddings().weight.detach()  # type: ignore[operator]  # a Parameter
        digest.update(embed[:: max(1, embed.shape[0] // 256)].to(torch.float32).numpy().tobytes())
    else:
        digest = hashlib.sha256(b"checkpoint-v1")
        digest.update(json.dumps(_architecture(model), sort_keys=True, default=str).encode())
        for key, tensor in sorted(model.state_dict().items()):
            flat = tensor.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 4096)][:4096]
            digest.update(key.encode())
            digest.update(sample.to(device="cpu", dtype=torch.float32).numpy().tobytes())
    if adapter_dir is not None:
        digest.update((adapter_dir / "adapter_model.safetensors").read_bytes())
    return digest.hexdigest()[:16]


def _architecture(model: PreTrainedModel) -> dict:
    """The config fields that shape the computation (not paths, names or the stored dtype)."""
    skip = {"_name_or_path", "name_or_path", "torch_dtype", "dtype", "transformers_version", "architectures"}
    return {k: v for k, v in model.config.to_dict().items() if k not in skip and not k.startswith("_")}
