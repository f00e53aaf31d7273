"""Batched greedy generation and teacher-forced likelihoods, with progress bars."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import GenerationMixin, PreTrainedTokenizerBase

from shared.lora import CausalModel, causal_lm_of, labelled_logits
from shared.precision import model_device
from shared.prompting import TokenizedExample, collate, encode_prompt


@torch.inference_mode()
def generate_greedy(
    model: CausalModel,
    tokenizer: PreTrainedTokenizerBase,
    instructions: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    max_prompt_tokens: int = 96,
    desc: str = "generate",
    progress: bool = True,
) -> list[str]:
    """Greedy completions of Alpaca prompts, left-padded per batch; the decoded text only, no prompt."""
    model.eval()
    pad = tokenizer.pad_token_id
    outputs: list[str] = []
    batches = range(0, len(instructions), batch_size)
    for start in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
        prompts = [
            encode_prompt(tokenizer, text, max_prompt_tokens)
            for text in instructions[start : start + batch_size]
        ]
        width = max(map(len, prompts))
        input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
        device = model_device(model)
        generated = cast(GenerationMixin, model).generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
        )
        outputs.extend(tokenizer.batch_decode(generated[:, width:].cpu(), skip_special_tokens=True))
    return outputs


@torch.inference_mode()
def target_token_log_probs(
    model: CausalModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[TokenizedExample],
    *,
    batch_size: int = 16,
    desc: str = "score",
    progress: bool = True,
) -> list[np.ndarray]:
    """Per example: the log-probability of each target (response) token under teacher forcing."""
    model.eval()
    causal_lm = causal_lm_of(model)
    scores: list[np.ndarray] = []
    for start in tqdm(
        range(0, len(examples), batch_size), desc=desc, unit="batch", disable=not progress, leave=False
    ):
        device = model_device(causal_lm)
        batch = {
            k: v.to(device)
            for k, v in collate(examples[start : start + batch_size], tokenizer.pad_token_id).items()
        }
        logits, targets, labelled = labelled_logits(causal_lm, batch)
        log_probs = torch.log_softmax(logits, dim=-1)
        picked = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1).double()
        scores.extend(chunk.cpu().numpy() for chunk in torch.split(picked, labelled.sum(dim=1).tolist()))
    return scores


def mean_token_log_likelihoods(
    model: CausalModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[TokenizedExample],
    *,
    batch_size: int = 16,
    desc: str = "score",
    progress: bool = True,
) -> list[float]:
    """Per example: mean log-likelihood of its target (response) tokens (0 for an empty target)."""
    per_token = target_token_log_probs(
        model, tokenizer, examples, batch_size=batch_size, desc=desc, progress=progress
    )
    return [float(tokens.mean()) if tokens.size else 0.0 for tokens in per_token]
