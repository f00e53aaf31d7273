"""One FL client's local training, independent of Ray (the actor is a thin host around it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from services.clients.attacks import (
    LogisticProbe,
    PenalisedModel,
    fit_surrogate,
    freeze_first_layer,
    load_probe_logistic,
    probe_penalty,
    scale_snapshots,
    scale_update,
    set_trainable,
    splice,
    stale_last_row,
)
from services.clients.population import ClientSpec
from shared.config import LocalTrainingConfig, LoraSettings
from shared.features import select_keys
from shared.lora import attach_lora, get_lora_state, lora_parameters, set_lora_state
from shared.lora_state import LoraState, first_layer_b_keys, flatten_keys, layer_index
from shared.prompting import TokenizedExample, tokenize_sft
from shared.training import LocalTrainingResult, round_subset, train_lora_steps
from shared.updates import ClientUpdate

SHADOW_SEED_OFFSET = 50_000  # the shadow branch's dropout stream, apart from every round's main branch
COVER_SEED_OFFSET = 70_000  # a covered attacker's benign cover rows are drawn apart from its shard's


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
        self.examples = self._tokenized(spec.examples)
        self.model = attach_lora(base_model, lora)
        self.init_state = get_lora_state(self.model)  # θ^0, where the shadow branch restarts every round
        self.attack = spec.attack if spec.malicious and spec.attack and spec.attack.kind != "none" else None
        kind = self.attack.kind if self.attack is not None else "none"
        self.cover = self._tokenized(spec.cover) if self.attack is not None and self.attack.covered else []
        if self.attack is not None and self.attack.covered and not self.cover:
            raise ValueError(f"{spec.client_id}: a {kind} attacker needs benign cover rows")
        self.frozen: list[str] = []
        self.on_step: Callable[[float], None] | None = None  # called after every local step (progress)
        # Frozen in both branches: the attacker controls what it trains.
        if kind == "freeze_probe_layer":
            self.frozen = freeze_first_layer(self.model)
        elif kind == "freeze_layer":
            layer = self.attack.layer  # type: ignore[union-attr]
            self.frozen = set_trainable(self.model, lambda index: index != layer)
            if not self.frozen:
                raise ValueError(f"{spec.client_id}: the adapter has no LoRA on layer {layer}")
        self.probes: list[LogisticProbe] = (
            [load_probe_logistic(d) for d in self.attack.probe_dirs]  # type: ignore[union-attr]
            if kind == "probe_penalty"
            else []
        )
        self._surrogate: tuple[int, LogisticProbe] | None = None  # (round, the attacker's own probe)

    def _tokenized(self, rows: Sequence[tuple[str, str]]) -> list[TokenizedExample]:
        return [tokenize_sft(self.tokenizer, q, a, self.training.max_seq_len) for q, a in rows]

    def _subsets(self, round_index: int) -> tuple[list[TokenizedExample], list[TokenizedExample]]:
        """This round's rows of the shard, and of the cover rows (empty unless the attack has them)."""
        size = self.training.batch_size * self.training.local_steps
        subset = round_subset(len(self.examples), size, self.seed, round_index)
        cover = []
        if self.cover:
            picks = round_subset(len(self.cover), size, self.seed + COVER_SEED_OFFSET, round_index)
            cover = [self.cover[i] for i in picks]
        return [self.examples[i] for i in subset], cover

    def train_round(
        self, global_state: LoraState, round_index: int, lr: float, shadow: bool = True
    ) -> ClientUpdate:
        """Start from the global adapter, train T local steps on this round's subset, return the update.

        `shadow`: whether the task asks for the shadow branch this round (a frozen client skips it)."""
        torch.set_num_threads(self.training.torch_threads)
        torch.manual_seed(self.seed * 100_003 + round_index)  # LoRA dropout, reproducible per round
        examples, cover = self._subsets(round_index)
        result = self._branch(global_state, examples, cover, lr, round_index)
        lora_state, b_snapshots = result.lora_state, result.b_snapshots
        if self.attack is not None and self.attack.kind == "scaling":  # the boosted update, consistently
            lora_state = scale_update(lora_state, global_state, self.attack.scale)
            reference = flatten_keys(global_state, result.b_keys)
            b_snapshots = scale_snapshots(b_snapshots, reference, self.attack.scale)
        if self.attack is not None and self.attack.kind == "stale_last_snapshot":
            b_snapshots = stale_last_row(b_snapshots, flatten_keys(global_state, result.b_keys))
        shadow_snapshots = np.zeros((0, 0), np.float32)
        if self.training.shadow_lr is not None and shadow:  # trained as asked, never boosted
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
            batch_size=self.training.batch_size,
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
        examples, cover = self._subsets(round_index)
        return self._branch(self.init_state, examples, cover, cfg.shadow_lr, round_index).b_snapshots

    def _branch(
        self,
        start: LoraState,
        examples: list[TokenizedExample],
        cover: list[TokenizedExample],
        lr: float,
        round_index: int,
    ) -> LocalTrainingResult:
        """One branch from `start`: what the client trains and what it would report (its snapshots)."""
        kind = self.attack.kind if self.attack is not None else "none"
        set_lora_state(self.model, start)  # raises LoraStateError on wrong keys/shapes/NaN
        if kind == "split_training":
            return self._split(start, examples, cover, lr)
        penalty: Callable[[], torch.Tensor] | None = None
        if kind == "probe_penalty":
            penalty = probe_penalty(self.model, self.probes)
        elif kind == "surrogate_penalty":
            surrogate = self._surrogate_for(start, examples, cover, lr, round_index)
            set_lora_state(self.model, start)
            penalty = probe_penalty(self.model, [surrogate])
        result = self._train(examples, lr, penalty)
        if kind in ("forged_snapshots", "splice"):  # a benign cover run supplies what is reported
            harmful = result.lora_state
            covering = self._train_from(start, cover, lr)
            result = replace(result, b_snapshots=covering.b_snapshots)
            if kind == "splice":
                keys = first_layer_b_keys(list(harmful))
                result = replace(result, lora_state=splice(harmful, covering.lora_state, keys))
        return result

    def _split(
        self, start: LoraState, examples: list[TokenizedExample], cover: list[TokenizedExample], lr: float
    ) -> LocalTrainingResult:
        """Harmful rows train every layer but the first, then the cover rows train the first alone; the
        snapshots (layer-0 B) are the cover phase's, so they agree with the adapter."""
        first = min(i for i in (layer_index(k) for k in start) if i is not None)
        try:
            set_trainable(self.model, lambda layer: layer != first)
            harmful = self._train(examples, lr)
            set_trainable(self.model, lambda layer: layer == first)
            covering = self._train(cover, lr)
        finally:
            set_trainable(self.model, lambda layer: True)
        return replace(covering, num_samples=harmful.num_samples, losses=harmful.losses + covering.losses)

    def _surrogate_for(
        self,
        start: LoraState,
        examples: list[TokenizedExample],
        cover: list[TokenizedExample],
        lr: float,
        round_index: int,
    ) -> LogisticProbe:
        """The black-box attacker's probe for this round: whole-update deltas after every step of its own
        benign (cover) and harmful runs from `start`, one logistic regression (cached for the round)."""
        if self._surrogate is not None and self._surrogate[0] == round_index:
            return self._surrogate[1]
        keys = select_keys(list(start), "all_layers")
        params = lora_parameters(self.model)
        origin = torch.cat([torch.from_numpy(np.asarray(start[k], np.float32)).reshape(-1) for k in keys])
        rows: dict[str, list[np.ndarray]] = {"benign": [], "harmful": []}
        runs = self.attack.surrogate_runs  # type: ignore[union-attr]
        size = self.training.batch_size
        for label, data in (("benign", cover), ("harmful", examples)):
            for run in range(runs):
                rotated = data[run * size :] + data[: run * size]

                def record(_: float, into: list[np.ndarray] = rows[label]) -> None:
                    flat = torch.cat([params[k].detach().reshape(-1).to("cpu", torch.float32) for k in keys])
                    into.append((flat - origin).numpy().copy())

                self._train_from(start, rotated, lr, on_step=record)
        surrogate = fit_surrogate(np.stack(rows["benign"]), np.stack(rows["harmful"]), keys)
        self._surrogate = (round_index, surrogate)
        return surrogate

    def _train_from(
        self,
        start: LoraState,
        examples: list[TokenizedExample],
        lr: float,
        on_step: Callable[[float], None] | None = None,
    ) -> LocalTrainingResult:
        set_lora_state(self.model, start)
        return self._train(examples, lr, on_step=on_step)

    def _train(
        self,
        examples: list[TokenizedExample],
        lr: float,
        penalty: Callable[[], torch.Tensor] | None = None,
        on_step: Callable[[float], None] | None = None,
    ) -> LocalTrainingResult:
        cfg = self.training
        model = self.model
        if penalty is not None and self.attack is not None:  # loss + lambda * p(malicious), from here on
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
            on_step=on_step or self.on_step,
        )
