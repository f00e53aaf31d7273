"""Write helm/safe-fedllm/README.md from values.yaml's `# --` comments (helm-docs' convention, as KubeRay).

    python scripts/chart_readme.py          # rewrite the README
    python scripts/chart_readme.py --check  # exit 1 if the committed README is stale (the tests run this)

A key documented with `# -- text` (continued on the following `#` lines) gets a row: its dotted path, its
default from values.yaml and the text. Comments without `--` describe a section and are not rows.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "helm" / "safe-fedllm"
KEY = re.compile(r"^([A-Za-z0-9_.-]+):")
HEADER = """# safe-fedllm chart

The Helm chart of safe-fedllm: the probe service (a KubeRay RayService), the aggregator, Redis, and
optionally the audit service and a federation RayJob. How to install, upgrade and operate it:
[docs/deploy.md](../../docs/deploy.md). Every value is checked by `values.schema.json` (unknown keys are
refused).

This file is generated from the comments in `values.yaml` by `python scripts/chart_readme.py`; edit those
comments, not this file.

## Values

| Key | Default | Description |
|---|---|---|
"""


def documented_keys(text: str) -> list[tuple[str, str]]:
    """(dotted key, description) for every key preceded by a `# --` comment block, in file order."""
    rows: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in text.splitlines():
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if pending is not None:
                pending.append(stripped[1:].strip())
            continue
        match = KEY.match(stripped)
        if not match:  # a list item, a continuation or a blank line
            if stripped:
                pending = None
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(1)))
        if pending is not None:
            rows.append((".".join(key for _, key in stack), " ".join(pending)))
            pending = None
    return rows


def default(values: dict[str, Any], dotted: str) -> str:
    node: Any = values
    for part in dotted.split("."):
        node = node[part]
    return f"`{json.dumps(node, separators=(',', ':'))}`"


def escape(text: str) -> str:
    return text.replace("|", "\\|")


def render(values_text: str) -> str:
    values = yaml.safe_load(values_text)
    rows = [
        f"| `{key}` | {default(values, key)} | {escape(text)} |" for key, text in documented_keys(values_text)
    ]
    return HEADER + "\n".join(rows) + "\n"


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if the README differs from values.yaml")
    args = parser.parse_args()
    readme = CHART / "README.md"
    text = render((CHART / "values.yaml").read_text(encoding="utf-8"))
    if args.check:
        if not readme.is_file() or readme.read_text(encoding="utf-8") != text:
            print(f"{readme} is stale: run python scripts/chart_readme.py", file=sys.stderr)
            sys.exit(1)
        return
    readme.write_text(text, encoding="utf-8")
    print(f"wrote {readme} ({text.count(chr(10)) - HEADER.count(chr(10))} values)")


if __name__ == "__main__":
    main()
