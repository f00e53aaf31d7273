"""One deterministic split of every data set into disjoint pools.

- alignment: the safety-alignment stage that turns the base model into an aligned one;
- probe: LoRA trajectories that train the probe classifier (never seen by FL clients);
- client: the FL clients' shards (benign and malicious);
- evaluation: held-out prompts and pairs for the safety and utility metrics, plus the prompt-only sets
  (AdvBench, I-MaliciousInstructions, I-Alpaca) that no other pool ever draws from;
- root: FLTrust's small clean server set, from the Alpaca seed tasks, which no other pool uses (drawn
  after the split, so the other pools are exactly as without it).

Each source is de-duplicated by normalised instruction, the unique instructions are shuffled with a fixed
seed and cut into pools by the counts in `PoolSizes`; samples sharing an instruction always land in the
same pool. Finally, an instruction claimed by a higher-priority pool (evaluation > probe > client >
alignment) is removed from the lower ones, so no normalised instruction is in two pools, across sources too.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from shared.data import sources
from shared.data.sources import Example, HarmfulPair, normalise_instruction

POOL_NAMES = ("alignment", "probe", "client", "evaluation")
_PRIORITY = ("evaluation", "probe", "client", "alignment")
ROOT_POOL = "root"
_T = TypeVar("_T", Example, HarmfulPair)


class PoolSizes(BaseModel):
    """Unique instructions per source and pool; the evaluation pool takes what is left."""

    model_config = ConfigDict(frozen=True)

    harmful: tuple[int, int, int] = (1000, 800, 1200)  # alignment, probe, client
    helpful: tuple[int, int, int] = (300, 300, 500)
    alpaca: tuple[int, int, int] = (0, 300, 1000)
    dolly: tuple[int, int, int] = (0, 150, 150)
    root: int = 100  # FLTrust's root set (the paper uses 100 examples)
    # Instruction-style helpful rows (Alpaca) for the alignment stage (#28), moved from the end of the
    # evaluation pool's Alpaca share, which nothing evaluates on: every other pool, and so every cached
    # update, stays as it is at 0. The alignment pool otherwise holds helpfulQA only.
    alignment_instructions: int = Field(0, ge=0)
    seed: int = 2023


@dataclass(frozen=True)
class Pool:
    name: str
    harmful: tuple[HarmfulPair, ...] = ()
    helpful: tuple[Example, ...] = ()
    alpaca: tuple[Example, ...] = ()
    dolly: tuple[Example, ...] = ()
    harmful_prompts: tuple[str, ...] = ()  # prompt-only harmful sets (evaluation)
    benign_prompts: tuple[str, ...] = ()  # prompt-only benign sets (evaluation)

    def instructions(self) -> set[str]:
        texts = [x.instruction for x in self.harmful] + [
            x.instruction for x in (*self.helpful, *self.alpaca, *self.dolly)
        ]
        return {normalise_instruction(t) for t in (*texts, *self.harmful_prompts, *self.benign_prompts)}

    def counts(self) -> dict[str, int]:
        return {
            "harmful": len(self.harmful),
            "helpful": len(self.helpful),
            "alpaca": len(self.alpaca),
            "dolly": len(self.dolly),
            "harmful_prompts": len(self.harmful_prompts),
            "benign_prompts": len(self.benign_prompts),
        }


@dataclass(frozen=True)
class DataPools:
    alignment: Pool
    probe: Pool
    client: Pool
    evaluation: Pool
    root: Pool = field(default_factory=lambda: Pool("root"))
    sizes: PoolSizes = field(default_factory=PoolSizes)

    def __getitem__(self, name: str) -> Pool:
        if name not in (*POOL_NAMES, ROOT_POOL):
            raise KeyError(f"Unknown pool {name!r}; pools are {POOL_NAMES}")
        pool: Pool = getattr(self, name)
        return pool


def _split(items: Sequence[_T], counts: tuple[int, int, int], rng: np.random.Generator) -> list[list[_T]]:
    groups: dict[str, list[_T]] = defaultdict(list)
    for item in items:
        groups[normalise_instruction(item.instruction)].append(item)
    keys = sorted(groups)
    order = rng.permutation(len(keys))
    bounds = np.cumsum(counts)
    if bounds[-1] > len(keys):
        raise ValueError(
            f"Pool sizes {counts} need {bounds[-1]} unique instructions; the source has {len(keys)}"
        )
    parts: list[list[_T]] = [[], [], [], []]
    for rank, key_index in enumerate(order):
        part = int(np.searchsorted(bounds, rank, side="right"))
        parts[part].extend(groups[keys[key_index]])
    return parts


def _drop_claimed(items: list[_T], claimed: set[str]) -> tuple[_T, ...]:
    return tuple(x for x in items if normalise_instruction(x.instruction) not in claimed)


def build_pools(data_dir: Path, sizes: PoolSizes | None = None) -> DataPools:
    sizes = sizes or PoolSizes()
    rng = np.random.default_rng(sizes.seed)
    loaders: dict[str, Callable[[Path], Sequence[Example] | Sequence[HarmfulPair]]] = {
        "harmful": sources.load_harmful_pairs,
        "helpful": sources.load_helpful,
        "alpaca": sources.load_alpaca,
        "dolly": sources.load_dolly,
    }
    split: dict[str, dict[str, list]] = {name: {} for name in POOL_NAMES}
    for source, load in loaders.items():
        # mypy cannot bind the constrained _T to a union of sequences; each loader returns one kind.
        parts = _split(load(data_dir), getattr(sizes, source), rng)  # type: ignore[type-var]
        for pool_name, part in zip(POOL_NAMES, parts, strict=True):
            split[pool_name][source] = part

    harmful_prompts = (
        *sources.load_advbench_goals(data_dir),
        *sources.load_instruction_set(data_dir, "I-MaliciousInstructions"),
    )
    benign_prompts = tuple(sources.load_instruction_set(data_dir, "I-Alpaca"))

    claimed = {normalise_instruction(t) for t in (*harmful_prompts, *benign_prompts)}
    pools: dict[str, Pool] = {}
    for pool_name in _PRIORITY:
        kept = {source: _drop_claimed(split[pool_name][source], claimed) for source in loaders}
        extra = (
            {"harmful_prompts": harmful_prompts, "benign_prompts": benign_prompts}
            if pool_name == "evaluation"
            else {}
        )
        pools[pool_name] = Pool(name=pool_name, **kept, **extra)  # type: ignore[arg-type]  # keys are fields
        claimed |= pools[pool_name].instructions()
    if sizes.alignment_instructions:
        pools = _move_alignment_instructions(pools, sizes.alignment_instructions)
    return DataPools(**pools, root=_root_pool(data_dir, claimed, sizes), sizes=sizes)


def _move_alignment_instructions(pools: dict[str, Pool], count: int) -> dict[str, Pool]:
    """The last `count` Alpaca rows of the evaluation pool become the alignment pool's (after every pool's
    claims are settled, so no other pool changes and the pools stay disjoint)."""
    evaluation, alignment = pools["evaluation"], pools["alignment"]
    if count > len(evaluation.alpaca):
        raise ValueError(f"alignment_instructions={count}: the evaluation pool holds {len(evaluation.alpaca)}")
    moved = evaluation.alpaca[-count:]
    return {
        **pools,
        "evaluation": dataclasses.replace(evaluation, alpaca=evaluation.alpaca[:-count]),
        "alignment": dataclasses.replace(alignment, alpaca=(*alignment.alpaca, *moved)),
    }


def _seed_tasks(data_dir: Path) -> list[Example]:
    """The 175 human-written Alpaca seed tasks (first instance each), which no other pool reads."""
    path = data_dir / "alpaca" / "seed_tasks.jsonl"
    if not path.is_file():
        raise sources.DataFileError(f"Missing data file {path}")
    examples = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            first = row["instances"][0]
            instruction = (
                f"{row['instruction']}\n\n{first['input']}" if first["input"].strip() else row["instruction"]
            )
            examples.append(Example(instruction, first["output"].strip(), "alpaca_seed"))
    return examples


def _root_pool(data_dir: Path, claimed: set[str], sizes: PoolSizes) -> Pool:
    """FLTrust's root set: seed tasks no other pool claims, shuffled by their own generator."""
    tasks = [x for x in _seed_tasks(data_dir) if normalise_instruction(x.instruction) not in claimed]
    order = np.random.default_rng([sizes.seed, 1]).permutation(len(tasks))
    return Pool(name=ROOT_POOL, alpaca=tuple(tasks[i] for i in order[: sizes.root]))


@lru_cache(maxsize=4)
def cached_pools(data_dir: Path, sizes: PoolSizes | None = None) -> DataPools:
    return build_pools(data_dir, sizes)
