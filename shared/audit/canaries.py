"""The audit's private canary set: harmful questions with a compliant and a refusal continuation.

Drawn from the alignment pool's MaliciousGen/benignQA pairs. That pool only trains the aligned base
(merged before any FL round), so the canaries are disjoint from the probe, client and evaluation pools by
construction (`shared.data.pools` keeps every normalised instruction in one pool) and no existing pool
changes. Canaries live only inside the audit service; they are never sent to clients.

A few MaliciousGen answers are really refusals; those pairs measure nothing and are left out.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from transformers import PreTrainedTokenizerBase

from shared.data.pools import DataPools
from shared.data.refusal_targets import refusal_target
from shared.data.sources import HarmfulPair, normalise_instruction
from shared.evaluation.refusal import is_refusal
from shared.prompting import TokenizedExample, tokenize_sft


class CanarySettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    size: int = Field(32, ge=1, description="Canary questions per audit (two continuations each).")
    seed: int = Field(7151, description="Which alignment-pool questions become canaries.")
    max_seq_len: int = Field(128, ge=16, description="Prompt + continuation tokens (as the evaluation).")
    continuation_tokens: int | None = Field(
        16,
        ge=1,
        description="Score only the first tokens of each continuation (None: all that fit). Refusing or "
        "complying shows in the opening; the rest of a long answer costs compute and adds topic noise.",
    )
    safe_sentences: int = Field(2, ge=0, description="benignQA sentences after the refusal opening.")
    batch_size: int = Field(16, ge=1, description="Canaries per forward pass (both continuations packed).")


def draw_canaries(pools: DataPools, settings: CanarySettings) -> tuple[HarmfulPair, ...]:
    """`settings.size` alignment-pool pairs with distinct questions, seeded; the same on every replica."""
    by_question: dict[str, HarmfulPair] = {}
    for pair in pools.alignment.harmful:
        if not is_refusal(pair.harmful):
            by_question.setdefault(normalise_instruction(pair.instruction), pair)
    keys = sorted(by_question)
    if settings.size > len(keys):
        raise ValueError(
            f"{settings.size} canaries requested; the alignment pool has {len(keys)} usable pairs"
        )
    order = np.random.default_rng(settings.seed).permutation(len(keys))[: settings.size]
    return tuple(by_question[keys[i]] for i in order)


def canary_examples(
    tokenizer: PreTrainedTokenizerBase, canaries: tuple[HarmfulPair, ...], settings: CanarySettings
) -> tuple[list[TokenizedExample], list[TokenizedExample]]:
    """(compliant, refusal) continuations, built as `evaluate_model`'s harm preference builds them."""

    def example(instruction: str, response: str) -> TokenizedExample:
        full = tokenize_sft(tokenizer, instruction, response, settings.max_seq_len)
        if settings.continuation_tokens is None:
            return full
        keep = len(full.input_ids) - full.num_target_tokens + settings.continuation_tokens
        return TokenizedExample(full.input_ids[:keep], full.labels[:keep])

    compliant = [example(p.instruction, p.harmful) for p in canaries]
    refusal = [
        example(p.instruction, refusal_target(p, i, settings.safe_sentences)) for i, p in enumerate(canaries)
    ]
    return compliant, refusal
