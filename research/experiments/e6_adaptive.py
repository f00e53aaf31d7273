"""E6 — attackers who know the defense, each through the ordinary client path (research.clients.attacks).

Per seed: clean FedAvg, then for every attack (the plain one included) FedAvg and each level at one
malicious ratio. Per run it records whether the attack still harms (harm preference above clean FedAvg's)
and how the level treated the malicious clients (their mean security factor over the rounds).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from research.clients.attacks import AttackConfig
from research.experiments import plots
from research.experiments.federation import federation_grid
from research.experiments.runner import Configuration

DEFENSES = ("fedavg", "step", "client", "shadow", "evidence")
RATIO = 0.5
ATTACKS = ("none", "mixing", "freeze_probe_layer", "scaling", "probe_penalty")  # E7 has the rest


def default_attacks(probe_dir: str) -> list[AttackConfig]:
    return [
        AttackConfig(kind="none"),
        *(AttackConfig(kind="mixing", benign_share=share) for share in (0.25, 0.5, 0.75)),
        AttackConfig(kind="freeze_probe_layer"),
        AttackConfig(kind="scaling", scale=3.0),
        AttackConfig(kind="probe_penalty", penalty_weight=1.0, probe_dirs=(probe_dir,)),
    ]


def configurations(
    config: Any,
    seeds: Sequence[int],
    ratio: float,
    defenses: Sequence[str],
    attacks: Sequence[AttackConfig],
    progress: bool = True,
) -> list[Configuration]:
    return federation_grid(config, seeds, [ratio], defenses, attacks, progress)


def malicious_factor(row: dict) -> float | None:
    """Mean security factor the level gave malicious clients over all rounds (None: no factors)."""
    malicious = {c for c, info in row.get("clients", {}).items() if info["malicious"]}
    values = [
        f for s in row.get("round_summaries", []) for c, f in s.get("factors", {}).items() if c in malicious
    ]
    return sum(values) / len(values) if values else None


def outcomes(rows: Sequence[dict]) -> list[dict]:
    """Per attacked run: harm relative to clean FedAvg (same seed) and the malicious clients' factor."""
    out = []
    for row in rows:
        if not row.get("rounds") or not row["malicious_ratio"]:
            continue
        clean = next(
            r
            for r in rows
            if r["seed"] == row["seed"] and r["defense"] == "fedavg" and r["malicious_ratio"] == 0.0
        )
        out.append(
            {
                "seed": row["seed"],
                "attack": row["attack_label"],
                "defense": row["defense"],
                "harm_preference_minus_clean": row["harm_preference"] - clean["harm_preference"],
                "harmless_rate_minus_clean": row["harmless_rate"] - clean["harmless_rate"],
                "still_harms": row["harm_preference"] > clean["harm_preference"],
                "malicious_mean_factor": malicious_factor(row),
            }
        )
    return out


def plot(result: dict, output: Path) -> list[Path]:
    rows = [r for r in result["rows"] if r.get("rounds") and r["malicious_ratio"]]
    return [
        plots.harmless_by_defense(
            rows, output.with_name(output.stem + "_harmless.png"), group="attack_label"
        ),
        plots.security_factors(rows, output.with_name(output.stem + "_factors.png")),
    ]
