"""E5 — the server's cost per round as the round grows: probe levels vs Krum, Bulyan and FLAME.

For 10, 100, 1,000 and 10,000 synthetic updates of the model's real LoRA shape (server_cost), each probe
level is timed for real ONNX scoring of the layer-0 B features, its decision and the weighted aggregation;
each baseline for its aggregation. Sizes run in ascending order; a baseline stops at the largest size that
fits: the next one is not run when its working memory would exceed the budget or when its time, grown
by the exponent measured between the last two sizes, would exceed the time budget. Rows say so; nothing
is extrapolated into a result.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from research.experiments.runner import Configuration
from research.experiments.server_cost import (
    SyntheticRound,
    attackers,
    available_memory_bytes,
    baseline_cost,
    baseline_peak_bytes,
    probe_level_cost,
    synthetic_round,
)

LEVELS = ("step", "client", "shadow", "evidence")
BASELINES = ("krum", "bulyan", "flame")


class OverheadSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "smollm2-135m"
    probe_id: str | None = None
    sizes: tuple[int, ...] = (10, 100, 1_000, 10_000)
    levels: tuple[str, ...] = LEVELS
    baselines: tuple[str, ...] = BASELINES
    steps: int = Field(5, ge=1, description="T: step (and shadow) snapshots per update.")
    batch_size: int = Field(8, ge=1)
    malicious_share: float = Field(0.3, ge=0, le=1)
    time_budget_s: float = Field(
        120.0, gt=0, description="Longest single baseline measurement to attempt (CPU seconds)."
    )
    memory_fraction: float = Field(0.6, gt=0, le=1, description="Of MemAvailable at start, for a baseline.")
    chunk: int = Field(500, ge=1, description="Updates per FedAvg chunk (bounds the stacked copy).")
    threads: int = Field(2, ge=1, description="ONNX Runtime and BLAS threads.")
    seed: int = 2023


def adapter_shapes(model: str) -> tuple[dict[str, tuple[int, ...]], str]:
    """Every LoRA tensor's shape with the project's LoRA settings, and the base weights' fingerprint."""
    from shared.config import LoraSettings
    from shared.lora import attach_lora, get_lora_state
    from shared.model_zoo import load_base_model

    loaded = load_base_model(model)
    state = get_lora_state(attach_lora(loaded.model, LoraSettings()))
    return {k: tuple(np.shape(v)) for k, v in state.items()}, loaded.fingerprint


def scaling_exponent(rows: list[dict], key: str = "cpu_seconds") -> float | None:
    """Slope of log(cost) against log(clients) between the two largest sizes run (1 = linear)."""
    ran = [r for r in rows if r["status"] == "ran"]
    if len(ran) < 2 or min(ran[-2][key], ran[-1][key]) <= 0:
        return None
    a, b = ran[-2], ran[-1]
    return math.log(b[key] / a[key]) / math.log(b["clients"] / a["clients"])


def configurations(settings: OverheadSettings) -> tuple[list[Configuration], dict]:
    """One configuration per method (its sizes inside, ascending); the dict gets the probe and shapes."""
    from probes.registry import ProbeRegistry
    from services.aggregator.defenses import DefenseSettings
    from services.aggregator.inputs import Inputs
    from services.aggregator.probe_binding import resolve_probe
    from services.probe_service.scoring import ProbeBank
    from services.probe_service.settings import ProbeServiceSettings
    from shared.config import LoraSettings

    artifacts = ProbeServiceSettings().artifacts_dir
    bank = ProbeBank(artifacts, ort_threads=settings.threads)
    shapes, fingerprint = adapter_shapes(settings.model)
    manifest = resolve_probe(  # the step level's (layer-0 B) probe, as the server would bind it
        bank,
        model=settings.model,
        lora=LoraSettings(),
        inputs=Inputs.STEPS,
        base_fingerprint=fingerprint,
        probe_id=settings.probe_id,
    )
    spec = manifest.feature_spec
    for key, shape in zip(spec.keys, spec.shapes, strict=True):
        if shapes.get(key) != tuple(shape):
            raise ValueError(f"{settings.model}'s {key} is {shapes.get(key)}, the probe expects {shape}")
    from research.clients.attacks import probe_logistic

    weight = probe_logistic(ProbeRegistry(Path(artifacts)).get(manifest.probe_id)).weight
    dim = sum(int(np.prod(s)) for s in shapes.values())
    defense = DefenseSettings(threshold=manifest.threshold, min_step=manifest.min_step)
    memory_budget = int(settings.memory_fraction * available_memory_bytes())
    rounds: dict[int, SyntheticRound] = {}

    def score(x: np.ndarray) -> np.ndarray:
        return bank.score(manifest.probe_id, x)

    def round_of(n: int) -> SyntheticRound:
        if n not in rounds:
            rounds[n] = synthetic_round(
                shapes,
                spec,
                weight,
                n,
                steps=settings.steps,
                batch_size=settings.batch_size,
                malicious_share=settings.malicious_share,
                seed=settings.seed,
            )
        return rounds[n]

    def level_rows(level: str) -> list[dict]:
        # untimed warm-up: the first call pays for imports and the ONNX session, not for the round
        probe_level_cost(level, round_of(settings.sizes[0]), spec, score, defense, chunk=settings.chunk)
        rows = []
        for n in settings.sizes:
            cost = probe_level_cost(
                level,
                round_of(n),
                spec,
                score,
                defense,
                chunk=settings.chunk,
            )
            rows.append(
                {
                    "method": level,
                    "kind": "probe level",
                    "clients": n,
                    "status": "ran",
                    "seconds": round(cost.seconds, 4),
                    "cpu_seconds": round(cost.cpu_seconds, 4),
                    "score_seconds": round(cost.score_seconds, 4),
                    "decide_seconds": round(cost.decide_seconds, 4),
                    "aggregate_seconds": round(cost.aggregate_seconds, 4),
                    "seconds_per_update": cost.seconds / n,
                    "malicious": int(round_of(n).malicious.sum()),
                    "flagged_malicious": cost.flagged_malicious,
                    "flagged_benign": cost.flagged_benign,
                    "round_skipped": cost.skipped,
                }
            )
        return rows

    def baseline_rows(name: str) -> list[dict]:
        baseline_cost(name, round_of(settings.sizes[0]), attackers(name, settings.sizes[0], 0.3))  # warm-up
        rows: list[dict] = []
        stopped = ""
        for n in settings.sizes:
            row = {"method": name, "kind": "baseline", "clients": n}
            need = baseline_peak_bytes(name, n, dim)
            ran = [r for r in rows if r["status"] == "ran"]
            exponent = scaling_exponent(rows) or 2.0  # the distance rules are quadratic in n at least
            # CPU seconds, not wall: on a shared machine wall time measures the neighbours as well
            predicted = ran[-1]["cpu_seconds"] * (n / ran[-1]["clients"]) ** exponent if ran else 0.0
            if stopped:
                row |= {"status": "not run", "reason": f"stopped below this size: {stopped}"}
            elif need > memory_budget:
                stopped = (
                    f"needs ~{need / 2**30:.1f} GiB of working memory (float64 [n, D] copies, D={dim}); "
                    f"budget {memory_budget / 2**30:.1f} GiB ({settings.memory_fraction:.0%} of available)"
                )
                row |= {"status": "not run", "reason": stopped}
            elif predicted > settings.time_budget_s:
                stopped = (
                    f"{ran[-1]['cpu_seconds']:.1f} CPU s at {ran[-1]['clients']} clients, growing as "
                    f"n^{exponent:.2f}, "
                    f"would exceed the {settings.time_budget_s:.0f} CPU s budget"
                )
                row |= {"status": "not run", "reason": stopped}
            else:
                seconds, cpu, result = baseline_cost(
                    name, round_of(n), attackers(name, n, settings.malicious_share)
                )
                kept = np.asarray([result.client_weights[u.client_id] > 0 for u in round_of(n).updates])
                row |= {
                    "status": "ran",
                    "seconds": round(seconds, 4),
                    "cpu_seconds": round(cpu, 4),
                    "seconds_per_update": seconds / n,
                    "estimated_peak_gib": round(need / 2**30, 2),
                    "options": attackers(name, n, settings.malicious_share),
                    "kept_malicious": int((kept & round_of(n).malicious).sum()),
                    "kept_benign": int((kept & ~round_of(n).malicious).sum()),
                }
            rows.append(row)
        return rows

    configs = [Configuration(level, functools.partial(level_rows, level)) for level in settings.levels]
    configs += [Configuration(name, functools.partial(baseline_rows, name)) for name in settings.baselines]
    context = {
        "probe_id": manifest.probe_id,
        "feature_dim": spec.dim,
        "adapter_parameters": dim,
        "adapter_mib": round(dim * 4 / 2**20, 2),
        "memory_budget_gib": round(memory_budget / 2**30, 1),
        "synthetic_updates": (
            "adapters cycled from 64 distinct random adapters (shared arrays; no arithmetic "
            "changes); step and shadow snapshots distinct per update; "
            "a malicious_share of them shifted along the probe weight"
        ),
        "scoring": "in-process ProbeBank (the probe service's ONNX Runtime core), batches of 4096 rows",
        "aggregation": (
            "the level's gate, then FedAvg with n_i * max(s_i, s_min), in chunks of `chunk` updates"
        ),
    }
    return configs, context


def summarise(rows: list[dict], levels: tuple[str, ...], largest: int) -> dict:
    """Per method: the scaling exponent between its two largest sizes, and the 60 s target at `largest`."""
    out: dict[str, dict] = {}
    for method in {r["method"] for r in rows}:
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["clients"])
        ran = [r for r in mine if r["status"] == "ran"]
        entry: dict = {
            "largest_size_run": ran[-1]["clients"] if ran else None,
            "scaling_exponent_last_two": scaling_exponent(mine),
        }
        if method in levels:
            at = next((r for r in ran if r["clients"] == largest), None)
            entry["seconds_at_largest"] = at["seconds"] if at else None
            entry["cpu_seconds_at_largest"] = at["cpu_seconds"] if at else None
            # CPU time (all threads) bounds the wall time of an otherwise idle machine from above
            entry["target_60s_met"] = bool(at and at["cpu_seconds"] <= 60.0)
        out[method] = entry
    return out


def checks(rows: list[dict]) -> dict[str, bool]:
    """From the run itself: every method's CPU cost grows from its smallest to its largest size run."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        ran = sorted(
            (r for r in rows if r["method"] == method and r["status"] == "ran"), key=lambda r: r["clients"]
        )
        if len(ran) >= 2:
            out[f"{method}: cost grows with clients"] = ran[-1]["cpu_seconds"] > ran[0]["cpu_seconds"]
    return out
