"""Federations for the experiments: one resumable configuration per (seed, malicious ratio, defense).

Each configuration is one `run_sweep` call (the research simulation), with its rounds recorded through
`on_round` (every client's probe score, security factor and weight per round) and its row completed with
what the experiments report: `over_refusal` and its Wilson interval, `round_seconds`, the attack.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from research.clients.attacks import AttackConfig
from research.experiments.runner import Configuration
from shared.evaluation.intervals import wilson_interval


def summary_record(summary: Any) -> dict:
    """A RoundSummary as JSON: what each sampled client scored, its factor and weight."""
    return {
        "round": summary.round_index,
        "phase": summary.phase.value,
        "sampled": list(summary.sampled),
        "scores": dict(summary.scores),
        "factors": dict(summary.factors),
        "weights": dict(summary.weights),
        "reason": summary.reason,
        "realignment": summary.realignment.as_dict() if summary.realignment else None,
    }


def complete_row(row: dict, num_benign_prompts: int, rounds: list[dict], attack: AttackConfig | None) -> dict:
    """The simulation's row plus over_refusal (with its interval), round_seconds, the rounds, the attack."""
    out = dict(row)
    rate = row.get("over_refusal_rate")
    out["over_refusal"] = rate
    out["over_refusal_ci95"] = (
        list(wilson_interval(round(rate * num_benign_prompts), num_benign_prompts))
        if rate is not None and num_benign_prompts > 0
        else None
    )
    out["round_seconds"] = (
        round(row["train_seconds"] / row["rounds"], 2) if row.get("train_seconds") and row["rounds"] else None
    )
    out["round_summaries"] = rounds
    out["attack"] = attack.model_dump() if attack is not None else None
    out["attack_label"] = attack.label() if attack is not None else "none"
    return out


def benign_prompt_count(config: Any) -> int:
    """How many benign prompts the over-refusal rate is over (the setting, or fewer if the pool is short)."""
    from shared.config import runtime_settings
    from shared.data.pools import build_pools

    evaluation = build_pools(runtime_settings().data_dir).evaluation
    available = len(evaluation.benign_prompts) + len(evaluation.helpful)
    return min(config.eval.num_benign_prompts, available)


def federation_rows(
    config: Any,
    ratio: float,
    defense: str,
    *,
    evaluate_start: bool = False,
    attack: AttackConfig | None = None,
    progress: bool = True,
) -> list[dict]:
    """One federation (and the start model's row first, if asked) as completed rows."""
    from research.simulation import run_sweep

    rounds: list[dict] = []
    attacked = config.model_copy(update={"attack": attack if attack and attack.kind != "none" else None})
    rows = run_sweep(
        attacked,
        [(ratio, defense)],
        evaluate_start=evaluate_start,
        on_round=lambda r, d, s: rounds.append(summary_record(s)),
        progress=progress,
    )
    count = benign_prompt_count(config)
    *start, run = rows
    return [complete_row(r, count, [], None) for r in start] + [complete_row(run, count, rounds, attack)]


def federation_configuration(
    config: Any,
    seed: int,
    ratio: float,
    defense: str,
    *,
    evaluate_start: bool = False,
    attack: AttackConfig | None = None,
    progress: bool = True,
) -> Configuration:
    """The configuration named `seed=S ratio=R defense=D [attack=A]` for the runner."""
    seeded = config.model_copy(update={"federation": config.federation.model_copy(update={"seed": seed})})
    name = f"seed={seed} ratio={ratio:g} defense={defense}" + (
        f" attack={attack.label()}" if attack is not None and attack.kind != "none" else ""
    )
    return Configuration(
        name,
        lambda: federation_rows(
            seeded, ratio, defense, evaluate_start=evaluate_start, attack=attack, progress=progress
        ),
    )


def federation_grid(
    config: Any,
    seeds: Sequence[int],
    ratios: Sequence[float],
    defenses: Sequence[str],
    attacks: Sequence[AttackConfig | None] = (None,),
    progress: bool = True,
) -> list[Configuration]:
    """Per seed: clean FedAvg (with the start model's row), then every (ratio, attack, defense) federation."""
    out = []
    for seed in seeds:
        out.append(
            federation_configuration(config, seed, 0.0, "fedavg", evaluate_start=True, progress=progress)
        )
        out += [
            federation_configuration(config, seed, ratio, defense, attack=attack, progress=progress)
            for ratio in ratios
            for attack in attacks
            for defense in defenses
            if (ratio, defense, attack) != (0.0, "fedavg", None)
        ]
    return out
