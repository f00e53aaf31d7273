#!/usr/bin/env bash
# #28: the benign-tuning test of the candidates nearest the targets, replicated over three seeds (other client
# rows and torch seed each; targets on the mean drop). One draw moves 100 prompts' rate by a few points, the
# size of the targets' margins. Reports: docs/results/alignment_robust/replicates_NAME.json (skipped if there).
set -euo pipefail
cd "$(dirname "$0")/../.."
. .venv/bin/activate
. scripts/env.sh
export SAFE_FEDLLM_COMPUTE_DTYPE=${SAFE_FEDLLM_COMPUTE_DTYPE:-auto}
SEEDS=${SEEDS:-2023,2024,2025}
for name in "$@"; do
    out=docs/results/alignment_robust/replicates_$name.json
    [ -f "$out" ] || python scripts/experiments/benign_tuning_test.py --adapter "runs/align_robust_$name" \
        --seeds "$SEEDS" --output "$out"
done
