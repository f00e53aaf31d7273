#!/usr/bin/env bash
# The test suite: install, lint, then unit and integration tests (tiny-llama, real Ray, real PEFT).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export TOKENIZERS_PARALLELISM=false RAY_DEDUP_LOGS=0
ruff check .
ruff format --check .
python -m pytest -q --durations=15 "$@"
