"""Server-side post-hoc realignment: a backstop that needs no detection (FedLLM-Attack's defense, Ye et al.,
ICLR 2025). After a round's aggregate is computed, the server fine-tunes that global adapter itself for K
steps on alignment data (explicit refusals to harmful questions mixed with helpful answers), so whatever
safety the clients' updates eroded is pulled back before the global is issued, whoever caused it.

The data come from the alignment pool only (the pool the shipped alignment stage trains on), never the
evaluation pool; refusal targets are built as the alignment stage builds them (an explicit refusal opening,
then the safe answer's first sentences). Each round draws its batches from (seed, round index), so a round
closed again after a crash realigns to the same state. The base model is loaded once, on first use, in the
aggregator's process; torch, PEFT and the model are imported only then.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.config import LoraSettings
from shared.data.pools import Pool
from shared.data.refusal_targets import refusal_target
from shared.lora_state import LoraState

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase

    from shared.prompting import TokenizedExample

# A defense name with this suffix (e.g. "shadow+realign") runs that defense with realignment on.
REALIGN_SUFFIX = "+realign"


class RealignmentSettings(BaseModel):
    """SAFE_FEDLLM_AGGREGATOR_REALIGNMENT__<FIELD>; the defaults are the issue's pilot (#22 item 4)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(False, description="Realign every aggregated round's global before committing it.")
    steps: int = Field(10, ge=1, description="K: optimizer steps per round.")
    refusals_per_batch: int = Field(2, ge=0, description="Refusals to harmful questions per batch.")
    helpful_per_batch: int = Field(6, ge=0, description="Helpful answers per batch (against over-refusal).")
    lr: float = Field(2e-4, gt=0, description="Constant lr of the K steps (a fresh AdamW each round).")
    seed: int = Field(2023, description="Batches and dropout of round r are drawn from (seed, r).")
    max_seq_len: int = Field(128, ge=32)
    safe_sentences: int = Field(
        2, ge=0, description="Sentences of the safe answer after the refusal opening."
    )
    weight_decay: float = Field(0.0, ge=0.0)
    grad_clip: float = Field(1.0, gt=0.0)

    @model_validator(mode="after")
    def _nonempty_batches(self) -> RealignmentSettings:
        if self.refusals_per_batch + self.helpful_per_batch == 0:
            raise ValueError("realignment batches need refusals_per_batch + helpful_per_batch >= 1")
        return self


def split_realignment(defense: str) -> tuple[str, bool]:
    """("shadow", True) for "shadow+realign"; (defense, False) for a name without the suffix."""
    if defense.endswith(REALIGN_SUFFIX):
        return defense[: -len(REALIGN_SUFFIX)], True
    return defense, False


@dataclass(frozen=True)
class AlignmentSample:
    kind: Literal["refusal", "helpful"]
    instruction: str
    target: str


@dataclass(frozen=True)
class AlignmentData:
    refusals: tuple[AlignmentSample, ...]
    helpful: tuple[AlignmentSample, ...]

    @classmethod
    def from_pool(cls, pool: Pool, safe_sentences: int) -> AlignmentData:
        """Refusals to the pool's harmful questions and its helpful answers; only the alignment pool."""
        if pool.name != "alignment":
            raise ValueError(f"realignment trains on the alignment pool only, not {pool.name!r}")
        refusals = tuple(
            AlignmentSample("refusal", p.instruction, refusal_target(p, i, safe_sentences))
            for i, p in enumerate(pool.harmful)
        )
        helpful = tuple(AlignmentSample("helpful", x.instruction, x.response) for x in pool.helpful)
        return cls(refusals, helpful)


def batch_plan(
    settings: RealignmentSettings, num_refusals: int, num_helpful: int, round_index: int
) -> list[tuple[list[int], list[int]]]:
    """Per step: (refusal indices, helpful indices), drawn with replacement from (seed, round_index)."""
    if (settings.refusals_per_batch and not num_refusals) or (settings.helpful_per_batch and not num_helpful):
        raise ValueError("the alignment pool lacks refusals or helpful answers for the configured batches")
    rng = np.random.default_rng([settings.seed, round_index])
    return [
        (
            rng.integers(0, max(num_refusals, 1), size=settings.refusals_per_batch).tolist(),
            rng.integers(0, max(num_helpful, 1), size=settings.helpful_per_batch).tolist(),
        )
        for _ in range(settings.steps)
    ]


@dataclass(frozen=True)
class RealignmentRecord:
    """What realigning one round cost and did: seconds of the K steps (the model load apart), losses."""

    round_index: int
    steps: int
    lr: float
    seconds: float
    load_seconds: float  # the one-off base-model load on first use (0 afterwards)
    cpu_seconds: float  # process CPU time of the K steps: the cost that contention does not inflate
    losses: tuple[float, ...] = field(default_factory=tuple)

    def note(self) -> str:
        """The decision log's reason entry."""
        return (
            f"realigned: {self.steps} steps at lr {self.lr:g}, loss {self.losses[0]:.3f}->"
            f"{self.losses[-1]:.3f}, {self.seconds:.1f} s"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "lr": self.lr,
            "seconds": round(self.seconds, 3),
            "load_seconds": round(self.load_seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "loss_first": self.losses[0],
            "loss_last": self.losses[-1],
        }


class Realigner:
    """Fine-tunes a global LoRA state on alignment data on the server's own copy of the base model."""

    def __init__(
        self,
        settings: RealignmentSettings,
        model_name: str,
        lora: LoraSettings,
        data_dir: Path | None = None,
    ) -> None:
        from shared.model_zoo import MODEL_NAMES  # torch comes with it: realignment needs it anyway

        if model_name not in MODEL_NAMES:  # refuse at start, not at the first round's close
            raise ValueError(
                f"realignment needs a known base model ({', '.join(MODEL_NAMES)}), got {model_name!r}"
            )
        self.settings, self.model_name, self.lora = settings, model_name, lora
        self._data_dir = data_dir
        self._data: AlignmentData | None = None
        self._model: PeftModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._examples: dict[tuple[str, int], TokenizedExample] = {}
        self._lock = threading.Lock()  # one realignment at a time on the one model copy

    @property
    def data(self) -> AlignmentData:
        if self._data is None:
            from shared.config import runtime_settings
            from shared.data.pools import cached_pools

            pools = cached_pools(self._data_dir or runtime_settings().data_dir)
            self._data = AlignmentData.from_pool(pools.alignment, self.settings.safe_sentences)
        return self._data

    def batches(self, round_index: int) -> list[list[AlignmentSample]]:
        """The samples each of round `round_index`'s K steps trains on (refusals first)."""
        data = self.data
        plan = batch_plan(self.settings, len(data.refusals), len(data.helpful), round_index)
        return [[data.refusals[i] for i in r] + [data.helpful[i] for i in h] for r, h in plan]

    def trained_samples(self) -> list[AlignmentSample]:
        """Every sample this realigner has fed the model so far (each once)."""
        data = self.data
        pools = {"refusal": data.refusals, "helpful": data.helpful}
        return [pools[kind][i] for kind, i in sorted(self._examples)]

    def _load(self) -> float:
        """Load the base model and attach the federation's LoRA (once); seconds it took."""
        if self._model is not None:
            return 0.0
        from shared.lora import attach_lora
        from shared.model_zoo import load_base_model

        started = time.perf_counter()
        loaded = load_base_model(self.model_name)
        self._model, self._tokenizer = attach_lora(loaded.model, self.lora), loaded.tokenizer
        return time.perf_counter() - started

    def _example(self, sample: AlignmentSample, key: tuple[str, int]) -> TokenizedExample:
        from shared.prompting import tokenize_sft

        if key not in self._examples:
            assert self._tokenizer is not None
            self._examples[key] = tokenize_sft(
                self._tokenizer, sample.instruction, sample.target, self.settings.max_seq_len
            )
        return self._examples[key]

    def realign(self, state: LoraState, round_index: int) -> tuple[LoraState, RealignmentRecord]:
        """(the realigned state, its record): K steps from `state` with a fresh AdamW at a constant lr."""
        import torch

        from shared.lora import get_lora_state, set_lora_state
        from shared.prompting import collate
        from shared.training import LoraStepper

        with self._lock:
            load_seconds = self._load()
            model, tokenizer = self._model, self._tokenizer
            assert model is not None and tokenizer is not None
            data = self.data
            plan = batch_plan(self.settings, len(data.refusals), len(data.helpful), round_index)
            set_lora_state(model, state)
            stepper = LoraStepper(
                model, weight_decay=self.settings.weight_decay, grad_clip=self.settings.grad_clip
            )
            losses: list[float] = []
            started, cpu_started = time.perf_counter(), time.process_time()
            seed = int(np.random.default_rng([self.settings.seed, round_index, 1]).integers(2**31))
            with torch.random.fork_rng(devices=[]):  # dropout draws from (seed, round), not the caller's RNG
                torch.manual_seed(seed)
                for refusal_ids, helpful_ids in plan:
                    batch = [self._example(data.refusals[i], ("refusal", i)) for i in refusal_ids] + [
                        self._example(data.helpful[i], ("helpful", i)) for i in helpful_ids
                    ]
                    losses.append(stepper.step(collate(batch, tokenizer.pad_token_id), self.settings.lr))
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
            model.eval()
            realigned = get_lora_state(model)
        record = RealignmentRecord(
            round_index, len(plan), self.settings.lr, seconds, load_seconds, cpu_seconds, tuple(losses)
        )
        return realigned, record


def instructions_of(batches: Sequence[Sequence[AlignmentSample]]) -> set[str]:
    """Every instruction the batches train on (for checks against the pools)."""
    return {sample.instruction for batch in batches for sample in batch}
