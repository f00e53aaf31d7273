"""`tiny-llama`: a 2-layer, 64-wide Llama with the SmolLM2 tokenizer, for fast tests.

Same architecture family and tokenizer as the real model, so every code path (LoRA targets, layer-0
features, generation, evaluation) is exercised at ~0.1 s a step. A purely random model cannot be moved by
a rank-8 q/v LoRA in a few dozen steps, so safety could not be degraded measurably; the model therefore
gets a short, seeded full-parameter pre-stage on the alignment pool (refusals to harmful questions mixed
with helpful answers), cached like the real model's weights. Built once in ~1 minute, then loaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from shared.data.pools import build_pools
from shared.data.refusal_targets import refusal_target
from shared.model_zoo.build_once import build_once
from shared.prompting import collate, tokenize_sft
from shared.training import response_loss

TINY_INIT_SEED = 1234


class _Prestage(TypedDict):
    steps: int
    batch_size: int
    max_seq_len: int
    lr: float
    version: int


PRESTAGE: _Prestage = {"steps": 300, "batch_size": 16, "max_seq_len": 64, "lr": 3e-3, "version": 2}


def tiny_config(tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )


def _prestage(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, data_dir: Path) -> None:
    alignment = build_pools(data_dir).alignment
    length = PRESTAGE["max_seq_len"]
    refusals = [
        tokenize_sft(tokenizer, p.instruction, refusal_target(p, i, 1), length)
        for i, p in enumerate(alignment.harmful)
    ]
    helpful = [tokenize_sft(tokenizer, x.instruction, x.response, length) for x in alignment.helpful]
    rng = np.random.default_rng(TINY_INIT_SEED)
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRESTAGE["lr"])
    half = PRESTAGE["batch_size"] // 2
    model.train()
    for _ in tqdm(range(PRESTAGE["steps"]), desc="tiny-llama pre-stage", unit="step", leave=False):
        batch = [refusals[i] for i in rng.integers(0, len(refusals), half)] + [
            helpful[i] for i in rng.integers(0, len(helpful), half)
        ]
        loss = response_loss(model, collate(batch, tokenizer.pad_token_id))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.eval()


def load_tiny_llama(tokenizer: PreTrainedTokenizerBase, cache_dir: Path, data_dir: Path) -> LlamaForCausalLM:
    config = tiny_config(tokenizer)
    key = hashlib.sha256(
        json.dumps([config.to_diff_dict(), PRESTAGE, TINY_INIT_SEED], sort_keys=True, default=str).encode()
    )

    def build(directory: Path) -> None:
        rng_state = torch.random.get_rng_state()
        torch.manual_seed(TINY_INIT_SEED)
        try:
            model = LlamaForCausalLM(config).float()
            _prestage(model, tokenizer, data_dir)
        finally:
            torch.random.set_rng_state(rng_state)
        model.save_pretrained(directory, safe_serialization=True)

    cached = build_once(cache_dir / f"tiny-llama-{key.hexdigest()[:12]}", build, complete="model.safetensors")
    return LlamaForCausalLM.from_pretrained(cached, dtype=torch.float32)
