"""The runner every experiment shares: named configurations, progress, resume, one result JSON.

An experiment is a list of configurations, each a name and a function returning result rows. The runner
saves each finished configuration's rows to `<output>.partial.json` at once, so a killed run continues from
the last finished configuration (the partial file remembers the settings it was made with; a run with
other settings refuses to mix them in). The final file holds the command, the settings and all rows.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

RESULTS_DIR = Path("runs/results")


@dataclass(frozen=True)
class Configuration:
    name: str  # unique within the experiment; the resume key
    run: Callable[[], list[dict]]


class SettingsMismatch(RuntimeError):
    pass


def partial_path(output: Path) -> Path:
    return output.with_name(output.stem + ".partial.json")


def _write_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)  # a kill mid-write leaves the previous partial file intact


def run_configurations(
    experiment: str,
    configurations: Sequence[Configuration],
    output: Path,
    settings: dict[str, Any],
    command: str,
    *,
    fresh: bool = False,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict:
    """Run what the partial file (or a finished `output` of the same settings) lacks, then write `output`
    (and drop the partial file)."""
    names = [c.name for c in configurations]
    if len(set(names)) != len(names):
        raise ValueError(f"{experiment}: configuration names must be unique, got {names}")
    partial = partial_path(output)
    done: dict[str, list[dict]] = {}
    # A finished result counts as done too: re-running the same command repeats nothing.
    saved_at = next((path for path in (partial, output) if path.is_file()), None)
    if saved_at is not None and not fresh:
        saved = json.loads(saved_at.read_text())
        if saved.get("settings") != settings:
            raise SettingsMismatch(
                f"{saved_at} was made with other settings; pass --fresh to start over, or the same settings "
                "to resume"
            )
        if saved_at == partial:
            done = saved["done"]
        else:
            for row in saved["rows"]:
                done.setdefault(row["configuration"], []).append(row)
    bar = tqdm(configurations, desc=experiment, unit="config", disable=not progress)
    for configuration in bar:
        bar.set_postfix_str(configuration.name)
        if configuration.name in done:
            continue
        started = time.perf_counter()
        rows = configuration.run()
        seconds = round(time.perf_counter() - started, 1)
        done[configuration.name] = [
            {"configuration": configuration.name, "configuration_seconds": seconds, **row} for row in rows
        ]
        _write_atomic(partial, {"experiment": experiment, "settings": settings, "done": done})
    result = {
        "experiment": experiment,
        "command": command,
        "settings": settings,
        **(extra or {}),
        "rows": [row for name in names for row in done[name]],
    }
    _write_atomic(output, result)
    partial.unlink(missing_ok=True)
    return result
