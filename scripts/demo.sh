#!/usr/bin/env bash
# The main job: install, then a short federated run on the real SmolLM2 (local Ray, embedded defaults).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
. scripts/env.sh
safe-fedllm demo "$@"
