"""The Alpaca template, SFT tokenisation with response-only labels, and batch collation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

PROMPT_PREFIX = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n### Instruction:\n"
)
PROMPT_SUFFIX = "\n\n### Response:\n"
IGNORE_INDEX = -100


def format_prompt(instruction: str) -> str:
    return f"{PROMPT_PREFIX}{instruction}{PROMPT_SUFFIX}"


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]  # IGNORE_INDEX on the prompt: the loss is on the response only

    @property
    def num_target_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def encode_prompt(tokenizer: PreTrainedTokenizerBase, instruction: str, max_prompt_tokens: int) -> list[int]:
    """Prompt token ids; an over-long instruction is cut so the template's response header survives."""
    prefix = tokenizer.encode(PROMPT_PREFIX, add_special_tokens=False)
    suffix = tokenizer.encode(PROMPT_SUFFIX, add_special_tokens=False)
    body = tokenizer.encode(instruction, add_special_tokens=False)
    budget = max(8, max_prompt_tokens - len(prefix) - len(suffix))
    return prefix + body[:budget] + suffix


def tokenize_sft(
    tokenizer: PreTrainedTokenizerBase, instruction: str, response: str, max_seq_len: int
) -> TokenizedExample:
    prompt = encode_prompt(tokenizer, instruction, max_seq_len // 2)
    answer = [*tokenizer.encode(response, add_special_tokens=False), tokenizer.eos_token_id]
    answer = answer[: max_seq_len - len(prompt)]
    return TokenizedExample(tuple(prompt + answer), tuple([IGNORE_INDEX] * len(prompt) + answer))


def collate(examples: Sequence[TokenizedExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch for teacher-forced training and likelihood scoring."""
    if not examples:
        raise ValueError("cannot collate an empty batch")
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
