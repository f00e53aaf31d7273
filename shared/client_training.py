"""One honest client's local training round: its rows, a LoRA-wrapped model over the shared frozen base.

What the deployable participant runs (`services/participant/local_training.py`), and the base of the
simulation's client trainer (`research/clients/trainer.py`), which overrides the hooks below to carry its
attacks. Every draw is seeded per client and round (the subset, LoRA dropout, the shadow branch's own
stream), so the same inputs give the same update: the experiment cache (`research/clients/update_cache.py`)
and the committed results rely on that, so the seeds and the order of the `torch.manual_seed` calls stay
as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from shared.config import LocalTrainingConfig, LoraSettings
from shared.lora import attach_lora, get_lora_state, set_lora_state
from shared.lora_state import LoraState
from shared.prompting import TokenizedExample, tokenize_sft
from shared.training import LocalTrainingResult, Objective, round_subset, train_lora_steps
from shared.updates import ClientUpdate

SHADOW_SEED_OFFSET = 50_000  # the shadow branch's dropout stream, apart from every round's main branch


@dataclass(frozen=True)
class Submitted:
    """What a client submits from its trained main branch: the adapter and the layer-0 B snapshots."""

    lora_state: LoraState
    b_snapshots: np.ndarray


class HonestTrainer:
    """Holds one client's shard (tokenised once) and a LoRA-wrapped model over the shared frozen base.

    The hooks a subclass overrides: `_branch` (what one branch trains from its start) and `_submitted`
    (what is reported from the main branch); an honest client trains its rows and reports what it trained."""

    def __init__(
        self,
        client_id: str,
        rows: Sequence[tuple[str, str]],
        base_model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        lora: LoraSettings,
        training: LocalTrainingConfig,
        seed: int = 2023,
    ) -> None:
        if not rows:
            raise ValueError(f"{client_id}: empty data shard; a client needs at least one example")
        self.client_id = client_id
        self.training = training
        self.seed = seed
        self.tokenizer = tokenizer
        self.examples = self._tokenized(rows)
        self.model = attach_lora(base_model, lora)  # draws LoRA A from torch's global stream
        self.init_state = get_lora_state(self.model)  # θ^0, where the shadow branch restarts every round
        self.on_step: Callable[[float], None] | None = None  # called after every local step (progress)

    def _tokenized(self, rows: Sequence[tuple[str, str]]) -> list[TokenizedExample]:
        return [tokenize_sft(self.tokenizer, q, a, self.training.max_seq_len) for q, a in rows]

    def _round_size(self) -> int:
        return self.training.batch_size * self.training.local_steps

    def _round_examples(self, round_index: int) -> list[TokenizedExample]:
        """This round's rows of the shard (the same for a client, seed and round in either branch)."""
        subset = round_subset(len(self.examples), self._round_size(), self.seed, round_index)
        return [self.examples[i] for i in subset]

    def train_round(
        self, global_state: LoraState, round_index: int, lr: float, shadow: bool = True
    ) -> ClientUpdate:
        """Start from the global adapter, train T local steps on this round's subset, return the update.

        `shadow`: whether the task asks for the shadow branch this round (a frozen client skips it)."""
        torch.set_num_threads(self.training.torch_threads)
        torch.manual_seed(self.seed * 100_003 + round_index)  # LoRA dropout, reproducible per round
        result = self._branch(global_state, self._round_examples(round_index), lr, round_index)
        submitted = self._submitted(result, global_state)
        shadow_snapshots = np.zeros((0, 0), np.float32)
        if self.training.shadow_lr is not None and shadow:  # trained as asked, never altered
            shadow_snapshots = self.train_shadow(round_index)
        return ClientUpdate(
            client_id=self.client_id,
            round_index=round_index,
            num_samples=result.num_samples,
            lora_state=submitted.lora_state,
            b_keys=result.b_keys,
            b_snapshots=submitted.b_snapshots,
            train_loss=float(np.mean(result.losses)),
            shadow_snapshots=shadow_snapshots,
            batch_size=self.training.batch_size,
        )

    def train_shadow(self, round_index: int) -> np.ndarray:
        """The shadow branch alone: this round's subset retrained from θ^0 at `shadow_lr`; [T, D] layer-0 B.

        Seeded on its own (not after the main branch), so it is the same whether trained with the main
        branch or apart from it, and does not depend on the global adapter (`CachedClientPool` relies
        on it)."""
        cfg = self.training
        if cfg.shadow_lr is None:
            raise ValueError(f"{self.client_id}: no shadow branch configured (training.shadow_lr is None)")
        torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(self.seed * 100_003 + round_index + SHADOW_SEED_OFFSET)
        examples = self._round_examples(round_index)
        return self._branch(self.init_state, examples, cfg.shadow_lr, round_index).b_snapshots

    def _branch(
        self, start: LoraState, examples: list[TokenizedExample], lr: float, round_index: int
    ) -> LocalTrainingResult:
        """One branch from `start`: what the client trains and what it would report (its snapshots)."""
        return self._train_from(start, examples, lr)

    def _submitted(self, result: LocalTrainingResult, global_state: LoraState) -> Submitted:
        """What the main branch reports: an honest client, exactly what it trained."""
        return Submitted(result.lora_state, result.b_snapshots)

    def _train_from(
        self,
        start: LoraState,
        examples: list[TokenizedExample],
        lr: float,
        on_step: Callable[[float], None] | None = None,
    ) -> LocalTrainingResult:
        set_lora_state(self.model, start)  # raises LoraStateError on wrong keys/shapes/NaN
        return self._train(examples, lr, on_step=on_step)

    def _train(
        self,
        examples: list[TokenizedExample],
        lr: float,
        on_step: Callable[[float], None] | None = None,
        objective: Objective | None = None,
    ) -> LocalTrainingResult:
        """T local steps on `examples` from the model's current LoRA state (`objective`: what they minimise,
        e.g. an attacker's penalised loss; default the response loss)."""
        cfg = self.training
        return train_lora_steps(
            self.model,
            examples,
            self.tokenizer,
            lr=lr,
            steps=cfg.local_steps,
            batch_size=cfg.batch_size,
            weight_decay=cfg.weight_decay,
            grad_clip=cfg.grad_clip,
            on_step=on_step or self.on_step,
            objective=objective,
        )
