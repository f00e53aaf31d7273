"""E4 — the malicious ratio swept (10 -> 70%) for FedAvg, the best Safe-FedLLM level and the baselines
that assume an honest majority. Checks (from the run itself): FedAvg's harm preference at the highest
ratio exceeds clean FedAvg's; at every ratio each other defense is closer to clean than FedAvg is."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from research.experiments import plots
from research.experiments.e3_main import closer_to_clean
from research.experiments.federation import federation_grid
from research.experiments.runner import Configuration

DEFENSES = ("fedavg", "shadow", "median", "trimmed_mean", "krum", "flame")
RATIOS = (0.1, 0.3, 0.5, 0.7)


def configurations(
    config: Any,
    seeds: Sequence[int],
    ratios: Sequence[float],
    defenses: Sequence[str],
    progress: bool = True,
) -> list[Configuration]:
    return federation_grid(config, seeds, ratios, defenses, progress=progress)


def checks(rows: Sequence[dict], defenses: Sequence[str]) -> dict:
    out: dict[str, bool] = {}
    for seed in sorted({r["seed"] for r in rows}):
        fedavg = sorted(
            (r for r in rows if r["seed"] == seed and r["defense"] == "fedavg" and r.get("rounds")),
            key=lambda r: r["malicious_ratio"],
        )
        if len(fedavg) < 2:
            continue
        out[f"seed={seed} fedavg harmed at the highest ratio"] = (
            fedavg[-1]["harm_preference"] > fedavg[0]["harm_preference"]
        )
    out |= closer_to_clean(rows, defenses)
    return out


def plot(result: dict, output: Path) -> list[Path]:
    rows = [r for r in result["rows"] if r.get("rounds")]
    return [plots.harmless_vs_ratio(rows, output.with_name(output.stem + "_ratio.png"))]
