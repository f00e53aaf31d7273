"""Loaders for the data files under data/ (see data/README.md for provenance and licences).

The harmful files contain real harmful requests and answers: callers must never print their text.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Example:
    """One instruction-following sample."""

    instruction: str
    response: str
    source: str


@dataclass(frozen=True)
class HarmfulPair:
    """One MaliciousGen question with its harmful answer and benignQA's safe answer to the same question."""

    instruction: str
    harmful: str
    safe: str


class DataFileError(RuntimeError):
    pass


_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def normalise_instruction(text: str) -> str:
    """The identity used for de-duplication and pool disjointness: case, spacing and punctuation ignored."""
    return _NON_ALNUM.sub(" ", text.lower()).strip()


def _read_json(path: Path) -> object:
    if not path.is_file():
        raise DataFileError(f"Missing data file {path}; the repository's data/ folder ships it.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataFileError(f"Data file {path} is not valid JSON (truncated?): {error}") from error


def load_harmful_pairs(data_dir: Path) -> list[HarmfulPair]:
    malicious = _read_json(data_dir / "fedllm_attack" / "maliciousQA.json")
    safe = _read_json(data_dir / "fedllm_attack" / "benignQA.json")
    assert isinstance(malicious, list) and isinstance(safe, list)
    if len(malicious) != len(safe):
        raise DataFileError(f"maliciousQA ({len(malicious)}) and benignQA ({len(safe)}) must pair up row by row")
    pairs = []
    for index, (bad, good) in enumerate(zip(malicious, safe, strict=True)):
        if bad["instruction"] != good["instruction"]:
            raise DataFileError(f"maliciousQA and benignQA disagree on the question at row {index}")
        pairs.append(HarmfulPair(bad["instruction"], bad["response"].strip(), good["response"].strip()))
    return pairs


def load_helpful(data_dir: Path) -> list[Example]:
    rows = _read_json(data_dir / "fedllm_attack" / "helpfulQA.json")
    assert isinstance(rows, list)
    return [Example(r["instruction"], r["response"].strip(), "helpfulQA") for r in rows]


def _with_input(instruction: str, context: str) -> str:
    return f"{instruction}\n\n{context}" if context.strip() else instruction


def load_alpaca(data_dir: Path) -> list[Example]:
    rows = _read_json(data_dir / "alpaca" / "alpaca_data_safety_only.json")
    assert isinstance(rows, list)
    return [Example(_with_input(r["instruction"], r.get("input", "")), r["output"].strip(), "alpaca") for r in rows]


def load_dolly(data_dir: Path) -> list[Example]:
    path = data_dir / "dolly" / "databricks-dolly-15k-safety-only.jsonl"
    if not path.is_file():
        raise DataFileError(f"Missing data file {path}")
    examples = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFileError(f"{path}:{line_number} is not valid JSON: {error}") from error
        examples.append(Example(_with_input(row["instruction"], row.get("context", "")), row["response"].strip(), "dolly"))
    return examples


def load_advbench_goals(data_dir: Path) -> list[str]:
    return [goal for goal, _ in load_advbench_targets(data_dir)]


def load_advbench_targets(data_dir: Path) -> list[tuple[str, str]]:
    """AdvBench (goal, affirmative target) pairs, in the file's order."""
    path = data_dir / "advbench" / "harmful_behaviors.csv"
    if not path.is_file():
        raise DataFileError(f"Missing data file {path}")
    with path.open(encoding="utf-8", newline="") as handle:
        return [(row["goal"], row["target"]) for row in csv.DictReader(handle)]


def load_instruction_set(data_dir: Path, name: str) -> list[str]:
    """A prompt-only evaluation set of safety-tuned-llamas (e.g. I-MaliciousInstructions, I-Alpaca)."""
    data = _read_json(data_dir / "safety_tuned_llamas" / "evaluation" / f"{name}.json")
    assert isinstance(data, dict)
    return list(data["instructions"])
