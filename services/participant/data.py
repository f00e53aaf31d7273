"""A participant's own training rows: JSONL or JSON files of instruction/response objects, or a directory.

Errors name the file and the row number, never the row's text (the data may be sensitive or harmful).
"""

from __future__ import annotations

import json
from pathlib import Path

SUFFIXES = (".jsonl", ".json")


class DataError(Exception):
    pass


def _row(value: object, where: str) -> tuple[str, str]:
    if not isinstance(value, dict):
        raise DataError(f"{where}: a row must be an object with 'instruction' and 'response'")
    instruction, response = value.get("instruction"), value.get("response", value.get("output"))
    extra = value.get("input")
    for name, field in (("instruction", instruction), ("response", response)):
        if not isinstance(field, str) or not field.strip():
            raise DataError(f"{where}: '{name}' must be a non-empty string")
    if isinstance(extra, str) and extra.strip():  # Alpaca's optional input, appended as Alpaca does
        instruction = f"{instruction}\n\n{extra}"
    return instruction, response  # type: ignore[return-value]  # both checked above


def _file_rows(path: Path) -> list[tuple[str, str]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number}: not JSON ({error.msg})") from None
            rows.append(_row(value, f"{path}:{number}"))
        return rows
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not JSON ({error.msg}, line {error.lineno})") from None
    if not isinstance(values, list):
        raise DataError(f"{path}: a JSON file must hold a list of rows")
    return [_row(value, f"{path}[{i}]") for i, value in enumerate(values)]


def load_rows(path: Path) -> list[tuple[str, str]]:
    """Every (instruction, response) row under `path`, files in name order."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
        if not files:
            raise DataError(f"{path}: no .jsonl or .json files")
    elif path.is_file():
        if path.suffix not in SUFFIXES:
            raise DataError(f"{path}: expected a .jsonl or .json file")
        files = [path]
    else:
        raise DataError(f"{path}: no such file or directory")
    rows = [row for file in files for row in _file_rows(file)]
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows
