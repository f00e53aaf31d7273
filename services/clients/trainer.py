"""One FL client's local training, independent of Ray (the actor is a thin host around it)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from services.clients.attacks import (
    PenalisedModel,
    freeze_first_layer,
    load_probe_logistic,
    probe_penalty,
    scale_snapshots,
    scale_update,
)
from services.clients.population import ClientSpec
from shared.config import LocalTrainingConfig, LoraSettings
from shared.lora import attach_lora, get_lora_state, set_lora_state
from shared.lora_state import LoraState, flatten_keys
from shared.prompting import tokenize_sft
from shared.training import LocalTrainingResult, round_subset, train_lora_steps
from shared.updates import ClientUpdate

SHADOW_SEED_OFFSET = 50_000  # the shadow branch's dropout stream, apart from every round's main branch


class ClientTrainer:
    """Holds one client's shard and a LoRA-wrapped model over the shared frozen base."""

    def __init__(
        self,
        spec: ClientSpec,
        base_model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        lora: LoraSettings,
        training: LocalTrainingConfig,
        seed: int = 2023,
    ) -> None:
        if not spec.examples:
            raise ValueError(f"{spec.client_id}: empty data shard; a client needs at least one example")
        self.spec = spec
        self.training = training
        self.seed = seed
        self.tokenizer = tokenizer
        self.examples = [tokenize_sft(tokenizer, q, a, training.max_seq_len) for q, a in spec.examples]
        self.model = attach_lora(base_model, lora)
        self.init_state = get_lora_state(self.model)  # θ^0, where the shadow branch restarts every round
        self.attack = spec.attack if spec.malicious and spec.attack and spec.attack.kind != "none" else None
        self.frozen: list[str] = []
        self.on_step: Callable[[float], None] | None = None  # called after every local step (progress)
        if self.attack is not None and self.attack.kind == "freeze_probe_layer":
            self.frozen = freeze_first_layer(self.model)  # in both branches: the attacker controls both
        self.probe = (
            load_probe_logistic(self.attack.probe_dir)  # type: ignore[arg-type]  # validated by AttackConfig
            if self.attack is not None and self.attack.kind == "probe_penalty"
            else None
        )

    def train_round(
        self, global_state: LoraState, round_index: int, lr: float, shadow: bool = True
    ) -> ClientUpdate:
        """Start from the global adapter, train T local steps on this round's subset, return the update.

        `shadow`: whether the task asks for the shadow branch this round (a frozen client skips it)."""
        torch.set_num_threads(self.training.torch_threads)
        torch.manual_seed(self.seed * 100_003 + round_index)  # LoRA dropout, reproducible per round
        set_lora_state(self.model, global_state)  # raises LoraStateError on wrong keys/shapes/NaN
        cfg = self.training
        subset = round_subset(len(self.examples), cfg.batch_size * cfg.local_steps, self.seed, round_index)
        examples = [self.examples[i] for i in subset]
        result = self._train(examples, lr)
        lora_state, b_snapshots = result.lora_state, result.b_snapshots
        if self.attack is not None and self.attack.kind == "scaling":  # the boosted update, consistently
            lora_state = scale_update(lora_state, global_state, self.attack.scale)
            reference = flatten_keys(global_state, result.b_keys)
            b_snapshots = scale_snapshots(b_snapshots, reference, self.attack.scale)
        shadow_snapshots = np.zeros((0, 0), np.float32)
        if cfg.shadow_lr is not None and shadow:  # the shadow branch is trained as asked, never boosted
            shadow_snapshots = self.train_shadow(round_index)
        return ClientUpdate(
            client_id=self.spec.client_id,
            round_index=round_index,
            num_samples=result.num_samples,
            lora_state=lora_state,
            b_keys=result.b_keys,
            b_snapshots=b_snapshots,
            train_loss=float(np.mean(result.losses)),
            shadow_snapshots=shadow_snapshots,
            batch_size=cfg.batch_size,
        )

    def train_shadow(self, round_index: int) -> np.ndarray:
        """The shadow branch alone: this round's subset retrained from θ^0 at `shadow_lr`; [T, D] layer-0 B.

        Seeded on its own (not after the main branch), so it is the same whether trained with the main
        branch or apart from it, and does not depend on the global adapter (`CachedClientPool` relies
        on it)."""
        cfg = self.training
        if cfg.shadow_lr is None:
            raise ValueError(
                f"{self.spec.client_id}: no shadow branch configured (training.shadow_lr is None)"
            )
        torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(self.seed * 100_003 + round_index + SHADOW_SEED_OFFSET)
        subset = round_subset(len(self.examples), cfg.batch_size * cfg.local_steps, self.seed, round_index)
        set_lora_state(self.model, self.init_state)
        return self._train([self.examples[i] for i in subset], cfg.shadow_lr).b_snapshots

    def _train(self, examples: list, lr: float) -> LocalTrainingResult:
        cfg = self.training
        model = self.model
        if self.probe is not None and self.attack is not None:  # loss + lambda * p(malicious), from here on
            penalty = probe_penalty(self.model, self.probe)
            # train_lora_steps only calls the model and reads its LoRA parameters: the wrapper does both
            model = PenalisedModel(self.model, penalty, self.attack.penalty_weight)  # type: ignore[assignment]
        return train_lora_steps(
            model,
            examples,
            self.tokenizer,
            lr=lr,
            steps=cfg.local_steps,
            batch_size=cfg.batch_size,
            weight_decay=cfg.weight_decay,
            grad_clip=cfg.grad_clip,
            on_step=self.on_step,
        )
