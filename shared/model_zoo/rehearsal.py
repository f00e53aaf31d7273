"""Benign fine-tuning rehearsal for the alignment stage (#28).

Recipes that only change the alignment data leave a frontier: refusals that survive three rounds of benign
client tuning also survive one round of harmful tuning. Rehearsal trains for the first half only. At each
alignment step it simulates a benign client's update — a step of radius `radius` down the gradient of a
benign batch's loss, on the adapter's LoRA weights in the modules the clients tune (q, v) — and adds the
gradient of the refusal loss *at that perturbed point* to the step's gradient (first-order, as in
first-order MAML and SAM). Refusals thus learn to sit where a benign update does not move them; nothing
rehearses a harmful update, so harmful tuning is left free to remove them, which keeps the attack
measurable. The rehearsed loss is a mean over its own few rows: at weight 1 it weighs as much as the whole
batch, and the refusal's share of a step grows with it (on SmolLM2, weight 1 made a broad refuser).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from shared.lora import CausalModel, lora_parameters
from shared.training import response_loss


@dataclass(frozen=True)
class RehearsalLosses:
    benign: float  # the benign batch's loss at the adapter's weights
    refusal_after: float  # the refusal batch's loss after the simulated benign step


def perturbed_parameters(model: torch.nn.Module, modules: Sequence[str]) -> list[torch.nn.Parameter]:
    """The LoRA parameters of `modules` (e.g. q_proj, v_proj): where a benign client's update lands."""
    picked = [p for key, p in lora_parameters(model).items() if any(f".{m}." in key for m in modules)]
    if not picked:
        raise ValueError(f"the adapter has no LoRA weights in {list(modules)}")
    return picked


def add_rehearsal_gradient(
    model: CausalModel,
    trainable: Sequence[torch.nn.Parameter],
    perturbed: Sequence[torch.nn.Parameter],
    benign_batch: Mapping[str, torch.Tensor],
    refusal_batch: Mapping[str, torch.Tensor],
    *,
    radius: float,
    weight: float,
) -> RehearsalLosses:
    """Adds `weight` x the refusal loss's gradient at (weights - radius x unit benign gradient on
    `perturbed`) to `trainable`'s .grad. The weights are restored exactly before it returns."""
    benign = response_loss(model, benign_batch)
    grads = torch.autograd.grad(benign, list(perturbed))
    norm = torch.stack([(g.double() ** 2).sum() for g in grads]).sum().sqrt()
    if not torch.isfinite(norm) or norm == 0:
        raise FloatingPointError(f"benign rehearsal gradient norm is {float(norm)}")
    saved = [p.detach().clone() for p in perturbed]
    try:
        with torch.no_grad():
            for p, g in zip(perturbed, grads, strict=True):
                p.sub_(g, alpha=radius / float(norm))
        refusal = response_loss(model, refusal_batch)
        if not torch.isfinite(refusal):
            raise FloatingPointError("non-finite refusal loss after the rehearsed benign step")
        refusal_grads = torch.autograd.grad(refusal, list(trainable))
    finally:
        with torch.no_grad():
            for p, original in zip(perturbed, saved, strict=True):
                p.copy_(original)
    for p, g in zip(trainable, refusal_grads, strict=True):
        if p.grad is None:
            p.grad = weight * g
        else:
            p.grad.add_(g, alpha=weight)
    return RehearsalLosses(benign=float(benign.detach()), refusal_after=float(refusal.detach()))
