#!/usr/bin/env bash
# #28: a robust alignment stage on SmolLM2 (MLP LoRA, recovery samples, mostly helpful rows), then a
# helpful-heavy second stage against over-refusal (as the shipped adapter's), each followed by the
# benign-tuning robustness test. Writes runs/align_robust/ and runs/align_robust_stage2/ (adapter +
# alignment_report.json with its benign_tuning section). A stage whose report exists is skipped (resumable).
set -euo pipefail
cd "$(dirname "$0")/../.."
. .venv/bin/activate
export SAFE_FEDLLM_COMPUTE_DTYPE=${SAFE_FEDLLM_COMPUTE_DTYPE:-auto} TOKENIZERS_PARALLELISM=false
MODULES=q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj
COMMON=(--model smollm2-135m --target-modules "$MODULES" --rank 16 --recovery-per-batch 1 --benign-tuning
        --eval-harmful 100 --eval-benign 60 --threads 2)
if [ ! -f runs/align_robust/alignment_report.json ]; then
    safe-fedllm align "${COMMON[@]}" --steps 300 --refusals-per-batch 1 --helpful-per-batch 6 \
        --lr-max 4e-4 --lr-min 2e-5 --output-dir runs/align_robust
fi
if [ ! -f runs/align_robust_stage2/alignment_report.json ]; then
    safe-fedllm align "${COMMON[@]}" --resume-from runs/align_robust --steps 60 --refusals-per-batch 1 \
        --helpful-per-batch 7 --lr-max 1e-4 --lr-min 1e-5 --output-dir runs/align_robust_stage2
fi
# Stage 1 again with instruction-style helpful rows (the alignment pool's Alpaca share; #28's next step).
if [ ! -f runs/align_robust_instr/alignment_report.json ]; then
    safe-fedllm align "${COMMON[@]}" --steps 300 --refusals-per-batch 1 --helpful-per-batch 4 \
        --instructions-per-batch 2 --lr-max 4e-4 --lr-min 2e-5 --output-dir runs/align_robust_instr \
        ${SKIP_BENIGN_TUNING:+--no-benign-tuning}
fi
