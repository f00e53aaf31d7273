"""Shared-prompt packing: a canary's two continuations scored in one sequence, its prompt computed once.

A canary is [prompt | compliant | refusal]. The refusal tokens attend to the prompt and to each other but
not to the compliant tokens, and their positions restart where the prompt ends, so each continuation sees
exactly what it would see alone: the same log-probabilities as two separate teacher-forced passes, for
prompt + 2K tokens instead of 2 (prompt + K). The prompt is most of a short canary, so this is the
audit's largest saving after truncating the continuations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from shared.lora import CausalModel, causal_lm_of
from shared.precision import model_device
from shared.prompting import TokenizedExample


@dataclass(frozen=True)
class PackedCanary:
    prompt: tuple[int, ...]
    compliant: tuple[int, ...]
    refusal: tuple[int, ...]

    @property
    def length(self) -> int:
        return len(self.prompt) + len(self.compliant) + len(self.refusal)


def pack(compliant: TokenizedExample, refusal: TokenizedExample) -> PackedCanary:
    """One canary from its two tokenised continuations, which must share their prompt."""
    cut = len(compliant.input_ids) - compliant.num_target_tokens
    prompt = compliant.input_ids[:cut]
    if refusal.input_ids[:cut] != prompt or len(refusal.input_ids) - refusal.num_target_tokens != cut:
        raise ValueError("a canary's continuations must follow the same prompt")
    if cut == 0:
        raise ValueError("a canary needs a prompt: its first continuation token is predicted from it")
    return PackedCanary(prompt, compliant.input_ids[cut:], refusal.input_ids[cut:])


@dataclass(frozen=True)
class PackedBatch:
    input_ids: torch.Tensor  # (B, W)
    position_ids: torch.Tensor  # (B, W)
    attention_mask: torch.Tensor  # (B, 1, W, W) bool, True = may attend
    predictors: list[tuple[np.ndarray, np.ndarray]]  # per canary: positions predicting compliant, refusal
    targets: list[tuple[np.ndarray, np.ndarray]]  # per canary: their token ids


def collate_packed(canaries: Sequence[PackedCanary], pad_token_id: int) -> PackedBatch:
    width = max(c.length for c in canaries)
    input_ids = torch.full((len(canaries), width), pad_token_id, dtype=torch.long)
    position_ids = torch.zeros((len(canaries), width), dtype=torch.long)
    allowed = torch.zeros((len(canaries), width, width), dtype=torch.bool)
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    predictors, targets = [], []
    for row, c in enumerate(canaries):
        p, kc, kr = len(c.prompt), len(c.compliant), len(c.refusal)
        input_ids[row, : c.length] = torch.tensor(c.prompt + c.compliant + c.refusal)
        position_ids[row, : p + kc] = torch.arange(p + kc)
        position_ids[row, p + kc : c.length] = torch.arange(p, p + kr)
        allowed[row, : c.length, : c.length] = causal[: c.length, : c.length]
        allowed[row, p + kc : c.length, p : p + kc] = False  # refusal tokens never see the compliant ones
        # The last prompt token predicts both continuations' first tokens.
        predict_refusal = np.r_[p - 1, np.arange(p + kc, p + kc + kr - 1)][:kr]
        predictors.append((np.arange(p - 1, p - 1 + kc), predict_refusal))
        targets.append((np.asarray(c.compliant), np.asarray(c.refusal)))
    idle = torch.arange(width)
    allowed[:, idle, idle] = True  # padding rows attend to themselves: no all-masked softmax
    return PackedBatch(input_ids, position_ids, allowed.unsqueeze(1), predictors, targets)


@torch.inference_mode()
def packed_log_probs(
    model: CausalModel,
    canaries: Sequence[PackedCanary],
    pad_token_id: int,
    batch_size: int,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per canary: (compliant, refusal) per-token log-probabilities under teacher forcing."""
    model.eval()
    causal_lm = causal_lm_of(model)
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, len(canaries), batch_size):
        batch = collate_packed(canaries[start : start + batch_size], pad_token_id)
        device = model_device(causal_lm)
        hidden = causal_lm.model(
            input_ids=batch.input_ids.to(device),
            attention_mask=batch.attention_mask.to(device),
            position_ids=batch.position_ids.to(device),
        ).last_hidden_state
        for row, (predictors, targets) in enumerate(zip(batch.predictors, batch.targets, strict=True)):
            positions = torch.from_numpy(np.concatenate(predictors)).to(device)
            ids = torch.from_numpy(np.concatenate(targets)).to(device)
            logits = causal_lm.lm_head(hidden[row, positions])
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            picked = log_probs.gather(-1, ids.unsqueeze(-1)).squeeze(-1).double().cpu().numpy()
            out.append((picked[: len(targets[0])], picked[len(targets[0]) :]))
    return out
