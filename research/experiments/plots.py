"""The experiments' PNG plots (matplotlib, no display): pure functions from result rows to a file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or in CI
import matplotlib.pyplot as plt

BENIGN, MALICIOUS = "tab:blue", "tab:red"


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _rate_errors(rows: Sequence[dict], key: str = "harmless_rate") -> tuple[list[float], list[list[float]]]:
    values = [r[key] for r in rows]
    low = [r[key] - r[f"{key}_ci95"][0] for r in rows]
    high = [r[f"{key}_ci95"][1] - r[key] for r in rows]
    return values, [low, high]


def security_factors(rows: Sequence[dict], path: Path) -> Path:
    """Each client's security factor over rounds, one panel per defended run; benign blue, malicious red."""
    runs = [r for r in rows if any(s.get("factors") for s in r.get("round_summaries", []))]
    fig, axes = plt.subplots(1, max(1, len(runs)), figsize=(3.2 * max(1, len(runs)), 3), squeeze=False)
    for ax, row in zip(axes[0], runs, strict=False):
        kinds = {c: info["malicious"] for c, info in row.get("clients", {}).items()}
        series: dict[str, list[tuple[int, float]]] = {}
        for summary in row["round_summaries"]:
            for client, factor in summary["factors"].items():
                series.setdefault(client, []).append((summary["round"], factor))
        for client, points in sorted(series.items()):
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, "o-", color=MALICIOUS if kinds.get(client) else BENIGN, alpha=0.6, ms=3)
        ax.set_title(f"{row['defense']} {row['malicious_ratio']:.0%} (seed {row['seed']})", fontsize=8)
        rounds = sorted({x for points in series.values() for x, _ in points}) or [0]
        ax.set_xticks(rounds)  # rounds are whole numbers, even when there is only one
        ax.set_xlim(rounds[0] - 0.5, rounds[-1] + 0.5)
        ax.set_xlabel("round")
        ax.set_ylim(-0.05, 1.05)
    axes[0][0].set_ylabel("security factor (blue benign, red malicious)", fontsize=8)
    return _save(fig, path)


def harmless_by_defense(rows: Sequence[dict], path: Path, group: str = "malicious_ratio") -> Path:
    """Harmless rate per defense with 95% intervals; one colour per `group` value (ratio or attack)."""
    groups = sorted({str(r[group]) for r in rows})
    defenses = list(dict.fromkeys(r["defense"] for r in rows))
    # at most ~16 in wide: a grid of many attacks x defenses packs its points instead of stretching
    fig, ax = plt.subplots(figsize=(min(16, max(6, 0.6 * len(defenses) * len(groups))), 4.2))
    width = 0.8 / max(1, len(groups))
    for g, value in enumerate(groups):
        mine = [r for r in rows if str(r[group]) == value]
        xs = [defenses.index(r["defense"]) + g * width for r in mine]
        ys, err = _rate_errors(mine)
        ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=3, label=f"{group} {value}")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(defenses))], defenses, rotation=45, ha="right")
    ax.set_ylabel("harmless rate (95% Wilson)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="lower left", ncol=2 if len(groups) > 6 else 1)
    return _save(fig, path)


def harmless_vs_ratio(rows: Sequence[dict], path: Path) -> Path:
    """Harmless rate against malicious ratio, one line per defense, with 95% intervals."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for defense in dict.fromkeys(r["defense"] for r in rows):
        mine = sorted((r for r in rows if r["defense"] == defense), key=lambda r: r["malicious_ratio"])
        ys, err = _rate_errors(mine)
        ax.errorbar([r["malicious_ratio"] for r in mine], ys, yerr=err, fmt="o-", capsize=3, label=defense)
    ax.set_xlabel("malicious ratio")
    ax.set_ylabel("harmless rate (95% Wilson)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    return _save(fig, path)


def cost_vs_clients(rows: Sequence[dict], path: Path, key: str = "cpu_seconds") -> Path:
    """Server cost per round against clients per round, log axes; sizes not run are left out. CPU
    seconds by default: on a shared machine wall time also measures the neighbours."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = sorted(
            (r for r in rows if r["method"] == method and r["status"] == "ran"), key=lambda r: r["clients"]
        )
        style = "o-" if mine and mine[0]["kind"] == "probe level" else "s--"
        ax.plot([r["clients"] for r in mine], [r[key] for r in mine], style, label=method)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("client updates per round")
    ax.set_ylabel(f"server {key.replace('_', ' ')} (scoring + aggregation)")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)
