"""E3 — the main comparison: clean FedAvg, attacked FedAvg, each Safe-FedLLM level and the baselines.

Per seed: clean FedAvg (0% malicious, with the start model's row), then every defense at every ratio.
Check (from the run itself): at each (seed, ratio), each level's harm preference is closer to clean
FedAvg's than attacked FedAvg's is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from research.experiments import plots
from research.experiments.federation import federation_grid
from research.experiments.runner import Configuration

LEVELS = ("step", "client", "shadow", "evidence")
BASELINES = (
    "median",
    "trimmed_mean",
    "krum",
    "multi_krum",
    "bulyan",
    "foolsgold",
    "flame",
    "dnc",
    "norm_clipping",
    "geometric_median",
)
DEFENSES = ("fedavg", *LEVELS, *BASELINES)
RATIOS = (0.3, 0.5)


def configurations(
    config: Any,
    seeds: Sequence[int],
    ratios: Sequence[float],
    defenses: Sequence[str],
    progress: bool = True,
) -> list[Configuration]:
    return federation_grid(config, seeds, ratios, defenses, progress=progress)


def closer_to_clean(rows: Sequence[dict], defenses: Sequence[str], key: str = "harm_preference") -> dict:
    """{"seed=S ratio=R defense=D": bool}: |defended - clean| < |attacked FedAvg - clean| for `key`."""
    checks = {}
    for row in rows:
        if row["defense"] not in defenses or row["defense"] == "fedavg" or not row["malicious_ratio"]:
            continue
        same_seed = [r for r in rows if r["seed"] == row["seed"] and r["defense"] == "fedavg"]
        clean = next((r for r in same_seed if r["malicious_ratio"] == 0.0), None)
        attacked = next((r for r in same_seed if r["malicious_ratio"] == row["malicious_ratio"]), None)
        if clean is None or attacked is None:  # FedAvg at this ratio was not run: nothing to compare
            continue
        name = f"seed={row['seed']} ratio={row['malicious_ratio']:g} defense={row['defense']}"
        checks[name] = abs(row[key] - clean[key]) < abs(attacked[key] - clean[key])
    return checks


def plot(result: dict, output: Path) -> list[Path]:
    rows = [r for r in result["rows"] if r.get("rounds")]
    return [
        plots.security_factors(rows, output.with_name(output.stem + "_factors.png")),
        plots.harmless_by_defense(rows, output.with_name(output.stem + "_harmless.png")),
    ]
