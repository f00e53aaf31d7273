"""Batched greedy generation and teacher-forced likelihoods, with progress bars."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from shared.prompting import IGNORE_INDEX, TokenizedExample, collate, encode_prompt


@torch.inference_mode()
def generate_greedy(
    model: PreTrainedModel,
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
        generated = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
        )
        outputs.extend(tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True))
    return outputs


@torch.inference_mode()
def mean_token_log_likelihoods(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[TokenizedExample],
    *,
    batch_size: int = 16,
    desc: str = "score",
    progress: bool = True,
) -> list[float]:
    """Per example: mean log-likelihood of its target (response) tokens under teacher forcing."""
    model.eval()
    scores: list[float] = []
    for start in tqdm(
        range(0, len(examples), batch_size), desc=desc, unit="batch", disable=not progress, leave=False
    ):
        batch = collate(examples[start : start + batch_size], tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        targets = batch["labels"][:, 1:]
        mask = targets != IGNORE_INDEX
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        sums = (picked * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1)
        scores.extend((sums / counts).tolist())
    return scores
