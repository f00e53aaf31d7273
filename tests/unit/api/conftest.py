"""Fixtures of the per-router API tests: the in-process apps of tests/unit/api/apps.py."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.api import apps


@pytest.fixture
def aggregator() -> Iterator[apps.Aggregator]:
    yield from apps.aggregator()


@pytest.fixture
def probe_app(tmp_path: Path) -> Iterator[apps.ProbeApp]:
    yield from apps.probe_app(tmp_path)
