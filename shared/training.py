"""The local SFT loop shared by FL clients, probe trajectories and the alignment stage.

A plain torch loop rather than TRL/HF Trainer: a fresh AdamW each call (as the official code creates a
new optimizer every round), one constant lr within the call, and a snapshot of the layer-0 LoRA B
matrices after every optimizer step for the probe's step- and shadow-level features.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from shared.lora import CausalModel, get_lora_state, labelled_logits, lora_parameters
from shared.lora_state import LoraState, first_layer_b_keys
from shared.precision import model_device
from shared.prompting import TokenizedExample, collate


@dataclass
class LocalTrainingResult:
    lora_state: LoraState
    num_samples: int  # n_i: distinct samples trained on this call
    losses: list[float]
    b_keys: list[str]  # the layer-0 B keys, sorted, as flattened into b_snapshots
    b_snapshots: np.ndarray  # [T, D] float32: layer-0 B after each step (raw values, not deltas)


def round_subset(num_examples: int, num_samples: int, seed: int, round_index: int) -> np.ndarray:
    """Indices of the samples one client trains on in a round (seeded by round, as in OpenFedLLM)."""
    if num_examples <= 0:
        raise ValueError("a client needs at least one training example")
    rng = np.random.default_rng([seed, round_index])
    return rng.choice(num_examples, size=min(num_samples, num_examples), replace=False)


def iterate_batches(
    examples: Sequence[TokenizedExample], batch_size: int, steps: int, pad_token_id: int
) -> Iterator[dict[str, torch.Tensor]]:
    """`steps` batches over `examples` in order, cycling when there are fewer than batch_size * steps."""
    if not examples:
        raise ValueError("cannot build batches from no examples")
    cursor = 0
    for _ in range(steps):
        batch = [examples[(cursor + i) % len(examples)] for i in range(batch_size)]
        cursor += batch_size
        yield collate(batch, pad_token_id)


def _first_layer_b_parameters(peft_model: PeftModel) -> tuple[list[str], list[torch.nn.Parameter]]:
    by_key = lora_parameters(peft_model)
    keys = first_layer_b_keys(list(by_key))
    return keys, [by_key[k] for k in keys]


# What a step minimises, given a collated batch (an attacker's adds a penalty to response_loss).
Objective = Callable[[Mapping[str, torch.Tensor]], torch.Tensor]


def response_loss(model: CausalModel, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the response tokens, i.e. `model(**batch).loss`, with the
    vocabulary projection on labelled positions only (`labelled_logits`; tiny-llama, 49k x 64: 1.4x faster
    per step, 1.8x under tcmalloc; bench/training_step_bench.py)."""
    logits, targets, _ = labelled_logits(model, batch)
    return torch.nn.functional.cross_entropy(logits, targets)


class LoraStepper:
    """One AdamW over the trainable (LoRA) parameters; `step` runs one optimizer step at a given lr on
    `objective(batch)` (default: the response loss)."""

    def __init__(
        self,
        peft_model: PeftModel,
        *,
        weight_decay: float = 0.0,
        grad_clip: float = 1.0,
        objective: Objective | None = None,
    ) -> None:
        self.model = peft_model
        self.objective = objective or partial(response_loss, peft_model)
        self.params = [p for p in peft_model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no trainable (LoRA) parameters")
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-4, weight_decay=weight_decay)
        self.grad_clip = grad_clip
        self.steps_done = 0

    def step(
        self,
        batch: dict[str, torch.Tensor],
        lr: float,
        after_backward: Callable[[], object] | None = None,
    ) -> float:
        """`after_backward()` may add to the gradients before they are clipped (the alignment's rehearsal)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        device = model_device(self.model)
        loss = self.objective({k: v.to(device) for k, v in batch.items()})
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss at step {self.steps_done + 1}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if after_backward is not None:
            after_backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        self.steps_done += 1
        return float(loss.detach())


def train_lora_steps(
    peft_model: PeftModel,
    examples: Sequence[TokenizedExample],
    tokenizer: PreTrainedTokenizerBase,
    *,
    lr: float,
    steps: int,
    batch_size: int,
    weight_decay: float = 0.0,
    grad_clip: float = 1.0,
    on_step: Callable[[float], None] | None = None,
    objective: Objective | None = None,
) -> LocalTrainingResult:
    """`steps` optimizer steps at a constant lr with a fresh optimizer, snapshotting layer-0 B after each.

    `on_step(loss)` after every step (a progress bar; it may raise to stop the call); `objective`: what the
    steps minimise (default: the response loss)."""
    stepper = LoraStepper(peft_model, weight_decay=weight_decay, grad_clip=grad_clip, objective=objective)
    b_keys, b_params = _first_layer_b_parameters(peft_model)
    snapshots: list[np.ndarray] = []
    losses: list[float] = []
    for batch in iterate_batches(examples, batch_size, steps, tokenizer.pad_token_id):
        losses.append(stepper.step(batch, lr))
        if on_step is not None:
            on_step(losses[-1])
        snapshots.append(
            torch.cat([p.detach().reshape(-1) for p in b_params]).to("cpu", torch.float32).numpy().copy()
        )
    peft_model.eval()
    return LocalTrainingResult(
        lora_state=get_lora_state(peft_model),
        num_samples=min(len(examples), batch_size * steps),
        losses=losses,
        b_keys=b_keys,
        b_snapshots=np.stack(snapshots),
    )
