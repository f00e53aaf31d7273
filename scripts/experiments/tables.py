"""Print an experiment result (docs/results/<name>.json, or its .partial.json) as the markdown table
docs/results.md gathers: one row per run with its rates, 95% intervals and the malicious clients' factors.

    python scripts/experiments/tables.py docs/results/e3_main.json [more.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def rows_of(path: Path) -> list[dict]:
    result = json.loads(path.read_text())
    if "rows" in result:
        return result["rows"]
    return [row for rows in result["done"].values() for row in rows]  # a partial file


def factors(row: dict, malicious: bool) -> str:
    values = [
        info["final_factor"]
        for info in (row.get("clients") or {}).values()
        if info["malicious"] == malicious and info.get("final_factor") is not None
    ]
    return f"{sum(values) / len(values):.2f}" if values else "–"


def table(rows: list[dict]) -> str:
    head = (
        "| defense | attack | malicious | harmless rate [95% CI] | harm preference [95% CI] | over-refusal "
        "| benign loss | factor benign / malicious |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    lines = [head]
    for r in rows:
        low, high = r["harmless_rate_ci95"]
        plow, phigh = r["harm_preference_ci95"]
        over = "–" if r.get("over_refusal") is None else f"{r['over_refusal']:.2f}"
        lines.append(
            f"| {r['defense']} | {r.get('attack_label') or 'none'} | {r['malicious_ratio']:.0%} "
            f"| {r['harmless_rate']:.2f} [{low:.2f}, {high:.2f}] "
            f"| {r['harm_preference']:.3f} [{plow:.3f}, {phigh:.3f}] | {over} | {r['benign_loss']:.3f} "
            f"| {factors(r, False)} / {factors(r, True)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(f"{name}\n\n{table(rows_of(Path(name)))}\n")
