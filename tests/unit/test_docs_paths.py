"""Every repository path the docs cite exists (a renamed module or a moved result breaks this test)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted(
    [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "helm" / "safe-fedllm" / "README.md"]
)
TOP = (
    "services/",
    "research/",
    "shared/",
    "probes/",
    "scripts/",
    "tests/",
    "docs/",
    "helm/",
    "bench/",
    "data/",
    ".ci/",
)
# `path`, `path:line`, `path::test` or `path (...)`: the token up to the first space, colon or "::"
CITED = re.compile(r"`((?:" + "|".join(re.escape(t) for t in TOP) + r")[^`\s:*<>{}$]*)")
# Made by a run, not committed (the docs say which command writes them).
GENERATED = ("runs/", "docs/results/e7_redteam")


def cited(doc: Path) -> list[str]:
    out = []
    for match in CITED.finditer(doc.read_text(encoding="utf-8")):
        path = match.group(1).rstrip(".,;)")
        if path and not path.startswith(GENERATED):
            out.append(path)
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_every_cited_path_exists(doc):
    missing = sorted({p for p in cited(doc) if not (ROOT / p).exists()})
    assert not missing, f"{doc.relative_to(ROOT)} cites paths that do not exist: {missing}"


def test_the_docs_cite_paths_at_all():
    assert sum(len(cited(d)) for d in DOCS) > 50  # the pattern still matches how the docs cite paths
