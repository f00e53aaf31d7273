#!/usr/bin/env bash
# The aggregate audit in the federation (docs/audit.md): E3's FedAvg rounds (10 SmolLM2 clients, one round,
# seed 2023; clean, 30% and 50% MaliciousGen) with each round's aggregate audited before it is committed, at
# the threshold scripts/experiments/audit_aggregate.py calibrated on clean aggregates (0.0434). Client
# training and evaluations come from the suite's cache (runs/cache) when it is there.
set -euo pipefail
cd "$(dirname "$0")/../.."
PATH="$PWD/.venv/bin:$PATH"
. scripts/env.sh
SAFE_FEDLLM_AUDIT_LEVEL_AGGREGATE_THRESHOLD=0.0434 safe-fedllm experiment e3_main --seed 2023 \
  --malicious-ratio 0.3 --malicious-ratio 0.5 --defense fedavg --no-progress \
  --output docs/results/aggregate_audit.json
