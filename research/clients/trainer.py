"""A simulated FL client's local training, independent of Ray (the actor is a thin host around it): the
honest trainer (`shared/client_training.py`) over its `ClientSpec`'s shard, carrying the spec's attack."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from research.clients.attacks import (
    LogisticProbe,
    PenalisedLoss,
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
from research.clients.population import ClientSpec
from shared.client_training import HonestTrainer, Submitted
from shared.config import LocalTrainingConfig, LoraSettings
from shared.features import select_keys
from shared.lora import lora_parameters, set_lora_state
from shared.lora_state import LoraState, first_layer_b_keys, flatten_keys, layer_index
from shared.prompting import TokenizedExample
from shared.training import LocalTrainingResult, round_subset

COVER_SEED_OFFSET = 70_000  # a covered attacker's benign cover rows are drawn apart from its shard's


class ClientTrainer(HonestTrainer):
    """One simulated client: a benign spec (or a spec without an attack) trains exactly as `HonestTrainer`;
    a malicious one overrides what its attack changes: what each branch trains (frozen layers, cover rows,
    penalties, split training) and what the main branch reports (forged, spliced, stale or scaled)."""

    def __init__(
        self,
        spec: ClientSpec,
        base_model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        lora: LoraSettings,
        training: LocalTrainingConfig,
        seed: int = 2023,
    ) -> None:
        super().__init__(spec.client_id, spec.examples, base_model, tokenizer, lora, training, seed)
        self.spec = spec
        self.attack = spec.attack if spec.malicious and spec.attack and spec.attack.kind != "none" else None
        kind = self.attack.kind if self.attack is not None else "none"
        self.cover = self._tokenized(spec.cover) if self.attack is not None and self.attack.covered else []
        if self.attack is not None and self.attack.covered and not self.cover:
            raise ValueError(f"{spec.client_id}: a {kind} attacker needs benign cover rows")
        self.frozen: list[str] = []
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

    def _round_cover(self, round_index: int) -> list[TokenizedExample]:
        """This round's cover rows (empty unless the attack has them), drawn apart from the shard's."""
        if not self.cover:
            return []
        picks = round_subset(len(self.cover), self._round_size(), self.seed + COVER_SEED_OFFSET, round_index)
        return [self.cover[i] for i in picks]

    def _submitted(self, result: LocalTrainingResult, global_state: LoraState) -> Submitted:
        lora_state, b_snapshots = result.lora_state, result.b_snapshots
        if self.attack is not None and self.attack.kind == "scaling":  # the boosted update, consistently
            lora_state = scale_update(lora_state, global_state, self.attack.scale)
            reference = flatten_keys(global_state, result.b_keys)
            b_snapshots = scale_snapshots(b_snapshots, reference, self.attack.scale)
        if self.attack is not None and self.attack.kind == "stale_last_snapshot":
            b_snapshots = stale_last_row(b_snapshots, flatten_keys(global_state, result.b_keys))
        return Submitted(lora_state, b_snapshots)

    def _branch(
        self, start: LoraState, examples: list[TokenizedExample], lr: float, round_index: int
    ) -> LocalTrainingResult:
        kind = self.attack.kind if self.attack is not None else "none"
        set_lora_state(self.model, start)  # raises LoraStateError on wrong keys/shapes/NaN
        cover = self._round_cover(round_index)
        if kind == "split_training":
            return self._split(start, examples, cover, lr)
        penalty: Callable[[], torch.Tensor] | None = None
        if kind == "probe_penalty":
            penalty = probe_penalty(self.model, self.probes)
        elif kind == "surrogate_penalty":
            surrogate = self._surrogate_for(start, examples, cover, lr, round_index)
            set_lora_state(self.model, start)
            penalty = probe_penalty(self.model, [surrogate])
        result = self._train(examples, lr, objective=self._penalised(penalty))
        if kind in ("forged_snapshots", "splice"):  # a benign cover run supplies what is reported
            harmful = result.lora_state
            covering = self._train_from(start, cover, lr)
            result = replace(result, b_snapshots=covering.b_snapshots)
            if kind == "splice":
                keys = first_layer_b_keys(list(harmful))
                result = replace(result, lora_state=splice(harmful, covering.lora_state, keys))
        return result

    def _penalised(self, penalty: Callable[[], torch.Tensor] | None) -> PenalisedLoss | None:
        """loss + lambda * p(malicious), from the branch's start on (None: the plain response loss)."""
        if penalty is None or self.attack is None:
            return None
        return PenalisedLoss(self.model, penalty, self.attack.penalty_weight)

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
