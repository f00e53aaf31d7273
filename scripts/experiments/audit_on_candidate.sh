#!/usr/bin/env bash
# #28 item 3 on a candidate aligned base before item 2's re-runs: the behavioural audit (audit_eval.py, the
# budget of docs/results/audit_eval.json) with the candidate's adapter in the shipped adapter's place for
# the run only. No shipped probe fits the candidate's fingerprint, so the probe column stays empty.
# Resumable through its own cache.
#   bash scripts/experiments/audit_on_candidate.sh runs/align_robust_imperative imperative
set -euo pipefail
cd "$(dirname "$0")/../.."
adapter=$1 name=$2
exec bash scripts/experiments/with_candidate_base.sh "$adapter" \
    python scripts/experiments/audit_eval.py --model smollm2-135m --updates 10 --canaries 48 --max-tokens 24 \
    --sizes 4,8,16,32,48 --token-counts 4,8,16,24 --cache "runs/audit_eval_$name" \
    --output "docs/results/alignment_robust/audit_eval_$name.json"
