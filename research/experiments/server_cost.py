"""The server's cost per round (probe scoring + aggregation) on synthetic updates of a real adapter shape.

Pure numpy + ONNX Runtime, no Ray: what is timed is the server's own work for n updates that have already
arrived. Adapters are cycled from a pool of distinct random adapters (shared arrays: 10,000 distinct
SmolLM2 adapters would need 18 GiB), which changes no arithmetic; step and shadow snapshots are distinct
per update. A share of the updates is shifted along the probe's weight direction, so each level has
something to flag (the flagged counts are reported as a sanity check, not as detection results).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from services.aggregator.defenses import DefenseSettings, ProbeEvidence, make_defense
from services.aggregator.defenses.gate import safety_gate
from services.aggregator.scoring import probe_inputs
from services.aggregator.strategies import AggregationResult, FedAvg, make_strategy
from shared.features import FeatureSpec
from shared.lora_state import LoraState
from shared.updates import ClientUpdate

Scorer = Callable[[np.ndarray], np.ndarray]  # raw feature rows [n, dim] -> probabilities [n]


@dataclass(frozen=True)
class SyntheticRound:
    global_state: LoraState
    updates: list[ClientUpdate]
    malicious: np.ndarray  # [n] bool


def synthetic_round(
    shapes: dict[str, tuple[int, ...]],
    spec: FeatureSpec,
    direction: np.ndarray,
    num_updates: int,
    *,
    steps: int = 5,
    batch_size: int = 8,
    malicious_share: float = 0.3,
    pool_size: int = 64,
    seed: int = 2023,
) -> SyntheticRound:
    """`direction`: the probe's weight vector; malicious snapshots move along it, benign ones against it."""
    rng = np.random.default_rng(seed)
    global_state = {k: (0.02 * rng.standard_normal(s)).astype(np.float32) for k, s in shapes.items()}
    for key in spec.keys:  # B starts at zero (the fixed init); the global's layer-0 B is the step reference
        global_state[key] = np.zeros(shapes[key], np.float32)
    pool = [
        {k: v + (1e-3 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in global_state.items()}
        for _ in range(min(pool_size, num_updates))
    ]
    unit = direction / max(float(np.linalg.norm(direction)), 1e-12)
    malicious = rng.random(num_updates) < malicious_share
    updates = []
    for i in range(num_updates):
        sign = 1.0 if malicious[i] else -1.0
        ramp = np.arange(1, steps + 1, dtype=np.float32)[:, None] / steps  # B grows over the local steps
        noise = rng.standard_normal((2, steps, spec.dim)).astype(np.float32) / np.sqrt(spec.dim)
        snapshots = (ramp * (sign * unit[None, :] + noise)).astype(np.float32) * 1e-3
        updates.append(
            ClientUpdate(
                client_id=f"client-{i:05d}",
                round_index=0,
                num_samples=batch_size * steps,
                lora_state=pool[i % len(pool)],
                b_keys=list(spec.keys),
                b_snapshots=snapshots[0],
                shadow_snapshots=snapshots[1],
                batch_size=batch_size,
            )
        )
    return SyntheticRound(global_state, updates, malicious)


def chunked_fedavg(
    global_state: LoraState,
    updates: Sequence[ClientUpdate],
    weights: Sequence[float],
    chunk: int = 500,
) -> LoraState:
    """FedAvg(updates, weights) computed chunk by chunk, so memory holds one chunk's stack, not all n.

    Each chunk's weighted mean (the project's FedAvg) is combined by the chunk's share of the total weight:
    the same aggregate as one call, up to float32 rounding."""
    raw = np.asarray([u.num_samples * w for u, w in zip(updates, weights, strict=True)], dtype=np.float64)
    total = raw.sum()
    out = {k: np.zeros_like(v, dtype=np.float64) for k, v in global_state.items()}
    for start in range(0, len(updates), chunk):
        part = raw[start : start + chunk].sum()
        if part <= 0:
            continue
        mean = (
            FedAvg()
            .aggregate(global_state, updates[start : start + chunk], list(weights[start : start + chunk]))
            .state
        )
        for key in out:
            out[key] += (part / total) * mean[key]
    return {k: v.astype(np.float32) for k, v in out.items()}


@dataclass
class LevelCost:
    score_seconds: float
    decide_seconds: float
    aggregate_seconds: float
    flagged_malicious: int  # updates with factor < 1 among the malicious ones
    flagged_benign: int
    skipped: bool
    cpu_seconds: float  # process CPU time (all threads): the work itself, whatever else the machine runs

    @property
    def seconds(self) -> float:
        return self.score_seconds + self.decide_seconds + self.aggregate_seconds


def probe_level_cost(
    level: str,
    round_: SyntheticRound,
    spec: FeatureSpec,
    scorer: Scorer,
    settings: DefenseSettings,
    *,
    score_batch: int = 4096,
    chunk: int = 500,
) -> LevelCost:
    """Score every update's probe inputs (batched as the probe service does), decide, aggregate."""
    defense = make_defense(level, settings)
    kinds = (defense.inputs,)
    cpu_started = time.process_time()
    started = time.perf_counter()
    blocks = [probe_inputs(u, spec, round_.global_state, kinds)[defense.inputs] for u in round_.updates]
    rows = np.concatenate(blocks)
    scores = np.concatenate([scorer(rows[i : i + score_batch]) for i in range(0, len(rows), score_batch)])
    scored_at = time.perf_counter()
    evidence, offset = [], 0
    for update, block in zip(round_.updates, blocks, strict=True):
        per_update = scores[offset : offset + len(block)].tolist()
        offset += len(block)
        evidence.append(
            ProbeEvidence(
                update.client_id,
                update.num_samples,
                update.batch_size,
                step_scores=per_update if defense.inputs == "steps" else None,
                shadow_scores=per_update if defense.inputs == "shadow" else None,
            )
        )
    decision = defense.decide(0, evidence, {})
    decided_at = time.perf_counter()
    skipped = safety_gate(round_.global_state, round_.updates, decision.factors, settings)
    if skipped is None:
        weights = [max(decision.factors[u.client_id], settings.min_weight) for u in round_.updates]
        chunked_fedavg(round_.global_state, round_.updates, weights, chunk)
    done = time.perf_counter()
    cpu_seconds = time.process_time() - cpu_started
    factors = np.asarray([decision.factors[u.client_id] for u in round_.updates])
    return LevelCost(
        score_seconds=scored_at - started,
        decide_seconds=decided_at - scored_at,
        aggregate_seconds=done - decided_at,
        flagged_malicious=int(((factors < 1) & round_.malicious).sum()),
        flagged_benign=int(((factors < 1) & ~round_.malicious).sum()),
        skipped=skipped is not None,
        cpu_seconds=cpu_seconds,
    )


def baseline_cost(name: str, round_: SyntheticRound, options: dict) -> tuple[float, float, AggregationResult]:
    """(wall seconds, process CPU seconds, result) of one aggregation by a baseline."""
    strategy = make_strategy(name, **options)
    cpu_started, started = time.process_time(), time.perf_counter()
    result = strategy.aggregate(round_.global_state, round_.updates, round_index=0)
    return time.perf_counter() - started, time.process_time() - cpu_started, result


def baseline_peak_bytes(name: str, num_updates: int, dim: int) -> int:
    """Rough peak working memory of a distance-based baseline: float64 [n, D] copies (the flattened list
    and its stack; FLAME also the clustered vectors and their unit rows) plus its n x n matrices."""
    copies = 4 if name == "flame" else 2
    return copies * num_updates * dim * 8 + 3 * num_updates * num_updates * 8


def attackers(name: str, num_updates: int, malicious_share: float) -> dict:
    """num_attackers for the rules that take it: the expected malicious count (Bulyan caps it itself)."""
    if name in ("krum", "multi_krum", "bulyan"):
        f = round(num_updates * malicious_share)
        return {"num_attackers": min(f, max(0, (num_updates - 3) // 2))}
    return {}


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux); elsewhere a conservative 8 GiB."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 1024**3
