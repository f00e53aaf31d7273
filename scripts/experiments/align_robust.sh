#!/usr/bin/env bash
# #28: a robust alignment stage on SmolLM2 (MLP LoRA, recovery samples, mostly helpful rows), then the
# benign-tuning robustness test. Writes runs/align_robust/ (adapter + alignment_report.json with benign_tuning).
set -euo pipefail
cd "$(dirname "$0")/../.."
. .venv/bin/activate
export SAFE_FEDLLM_COMPUTE_DTYPE=${SAFE_FEDLLM_COMPUTE_DTYPE:-auto} TOKENIZERS_PARALLELISM=false
safe-fedllm align --model smollm2-135m --target-modules q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj \
  --rank 16 --steps 300 --refusals-per-batch 1 --recovery-per-batch 1 --helpful-per-batch 6 \
  --lr-max 4e-4 --lr-min 2e-5 --benign-tuning --eval-harmful 100 --eval-benign 60 --threads 2 \
  --output-dir runs/align_robust
