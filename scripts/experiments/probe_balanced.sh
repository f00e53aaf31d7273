#!/usr/bin/env bash
# E2 writer-balanced, whole-update build (issue #22 item 3). Resumable: re-run the same command.
set -euo pipefail
cd "$(dirname "$0")/../.."
. .venv/bin/activate
. scripts/env.sh
export SAFE_FEDLLM_COMPUTE_DTYPE=float32
safe-fedllm probe build --model smollm2-135m --all-layers --selfgen-benign 300 \
  --train maliciousgen=16 --train selfgen_harmful=16 --train helpful=16 --train selfgen_benign=16 --train alpaca=8 \
  --test maliciousgen=4 --test selfgen_harmful=4 --test helpful=4 --test selfgen_benign=4 --test alpaca=3 --test dolly=3 \
  --client-setting-trajectories 1 --threads 2 --output runs/probe_data/smollm2-135m-balanced
