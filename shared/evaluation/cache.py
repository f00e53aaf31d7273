"""Evaluations remembered by adapter: the metrics are deterministic (greedy decoding, fixed prompts), so an
adapter evaluated once under the same base and settings need not be evaluated again (experiment grids
evaluate the same clean FedAvg or start model in several experiments)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ValidationError

from shared.evaluation.metrics import SafetyReport
from shared.lora_state import LoraState
from shared.updates import lora_state_digest

log = logging.getLogger(__name__)

EVALUATION_CACHE_VERSION = 1


def cached_evaluation(
    directory: Path,
    context: tuple[str, BaseModel],
    state: LoraState,
    evaluate: Callable[[], SafetyReport],
) -> SafetyReport:
    """The report stored for (base fingerprint, settings, adapter) under `directory`/evaluations, else
    `evaluate()`, stored."""
    fingerprint, settings = context
    # progress bars do not change a metric
    described = settings.model_dump(mode="json", exclude={"progress"})
    key = json.dumps(
        [EVALUATION_CACHE_VERSION, fingerprint, described, lora_state_digest(state)], sort_keys=True
    )
    path = directory / "evaluations" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"
    if path.is_file():
        try:
            return SafetyReport.model_validate_json(path.read_text())
        except ValidationError:  # a truncated or foreign file: evaluate again and replace it
            log.warning("evaluation cache entry %s is unreadable: evaluating again", path.name)
    report = evaluate()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(report.model_dump(mode="json")))
    os.replace(tmp, path)
    return report
