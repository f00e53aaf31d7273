#!/usr/bin/env bash
# #28: robust alignment candidates on SmolLM2 (MLP LoRA, recovery samples, mostly helpful rows; then
# instruction-style rows, more refusal rows, a second stage, imperative refusals), each followed by the
# benign-tuning robustness test. Writes runs/align_robust*/ (adapter + alignment_report.json with its
# benign_tuning section; docs/results.md compares them). A block whose report exists is skipped (resumable).
set -euo pipefail
cd "$(dirname "$0")/../.."
. .venv/bin/activate
. scripts/env.sh
export SAFE_FEDLLM_COMPUTE_DTYPE=${SAFE_FEDLLM_COMPUTE_DTYPE:-auto}
MODULES=q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj
COMMON=(--model smollm2-135m --target-modules "$MODULES" --rank 16 --recovery-per-batch 1 --benign-tuning
        --eval-harmful 100 --eval-benign 60 --threads 2)
# candidate NAME [align options]: trains runs/NAME with COMMON's options first (a later one wins), unless its
# report exists. ONLY=NAME runs that block alone (a fresh machine has none of the earlier adapters).
candidate() {
    local name=$1
    shift
    [ -z "${ONLY:-}" ] || [ "$ONLY" = "$name" ] || return 0
    [ -f "runs/$name/alignment_report.json" ] ||
        safe-fedllm align "${COMMON[@]}" "$@" --output-dir "runs/$name"
}
candidate align_robust --steps 300 --refusals-per-batch 1 --helpful-per-batch 6 \
    --lr-max 4e-4 --lr-min 2e-5
candidate align_robust_stage2 --resume-from runs/align_robust --steps 60 --refusals-per-batch 1 \
    --helpful-per-batch 7 --lr-max 1e-4 --lr-min 1e-5
# Stage 1 again with instruction-style helpful rows (the alignment pool's Alpaca share; #28's next step).
candidate align_robust_instr --steps 300 --refusals-per-batch 1 --helpful-per-batch 4 \
    --instructions-per-batch 2 --lr-max 4e-4 --lr-min 2e-5 \
    ${SKIP_BENIGN_TUNING:+--no-benign-tuning}
# The instruction-row recipe missed refusal (0.80) and harm's one-round drop (9) narrowly: twice the refusal rows.
candidate align_robust_instr_r2 --steps 300 --refusals-per-batch 2 --helpful-per-batch 3 \
    --instructions-per-batch 2 --lr-max 4e-4 --lr-min 2e-5
# r2 met refusal (0.87), over-refusal (0.07) and harm's drop (11), but Alpaca's 3-round drop was 13: more
# refusal rows held the drift down from r1 to r2, so a third.
candidate align_robust_instr_r3 --steps 300 --refusals-per-batch 3 --helpful-per-batch 2 \
    --instructions-per-batch 2 --lr-max 4e-4 --lr-min 2e-5
# r3 was worse on every benign cell: r2's mix stays, and a low-lr second stage on r2 deepens what it learned
# (the stage-2 recipe of the first block pair, on r2's mix).
candidate align_robust_instr_r2_stage2 --resume-from runs/align_robust_instr_r2 --steps 150 \
    --refusals-per-batch 2 --helpful-per-batch 3 --instructions-per-batch 2 --lr-max 1e-4 --lr-min 1e-5
# Every harmful row of the alignment pool is a question; AdvBench and Alpaca are imperatives. r2's mix with
# one of its two refusal rows restated as an imperative (shared/data/imperatives.py): the same refusal share.
candidate align_robust_imperative --steps 300 --refusals-per-batch 1 --imperatives-per-batch 1 \
    --helpful-per-batch 3 --instructions-per-batch 2 --lr-max 4e-4 --lr-min 2e-5
# The imperative recipe's refusal is keyed on content (benign tuning moves it 2–6 points) but too deep for one
# round of harm to move (4 points): the same mix, trained a third less (200 steps).
candidate align_robust_imperative_s200 --steps 200 --refusals-per-batch 1 --imperatives-per-batch 1 \
    --helpful-per-batch 3 --instructions-per-batch 2 --lr-max 4e-4 --lr-min 2e-5
# Training less did not let harm through (one round: 1 point; Alpaca's three rounds: 8). The recovery rows
# (a harmful answer's start, then a refusal) are Qi et al.'s defence against harmful fine-tuning itself: the
# imperative recipe without them (the last --recovery-per-batch wins over COMMON's).
candidate align_robust_imperative_norec --recovery-per-batch 0 --steps 300 --refusals-per-batch 1 \
    --imperatives-per-batch 1 --helpful-per-batch 3 --instructions-per-batch 2 --lr-max 4e-4 --lr-min 2e-5
# Every candidate with Alpaca's drift within target moved ≤ 4 points in one round of harm, every one with
# ≥ 10 drifted ≥ 13: two points between. r2's two question refusals (no recovery rows) with an imperative
# refusal in every second batch only (a fifth of the refusal rows, the imperative recipe's half)...
candidate align_robust_imperative_fifth --recovery-per-batch 0 --steps 300 --refusals-per-batch 2 \
    --imperatives-per-batch 1 --imperatives-every 2 --helpful-per-batch 3 --instructions-per-batch 2 \
    --lr-max 4e-4 --lr-min 2e-5
# ...and the no-recovery imperative recipe at half the learning rate: a smaller refusal margin for one round
# of harm to cross.
candidate align_robust_imperative_norec_lr2 --recovery-per-batch 0 --steps 300 --refusals-per-batch 1 \
    --imperatives-per-batch 1 --helpful-per-batch 3 --instructions-per-batch 2 --lr-max 2e-4 --lr-min 1e-5
# Half the lr stayed on the first side (harm 2, over-refusal 0.25). Every candidate so far had 2 Alpaca rows
# per batch, and the drift that fails is always three rounds of Alpaca: the every-second-batch recipe
# (harm 10) with 4 instruction rows instead of 2 of its helpfulQA rows.
candidate align_robust_imperative_fifth_instr4 --recovery-per-batch 0 --steps 300 --refusals-per-batch 2 \
    --imperatives-per-batch 1 --imperatives-every 2 --helpful-per-batch 1 --instructions-per-batch 4 \
    --lr-max 4e-4 --lr-min 2e-5
# More instruction rows made everything easier to move. The two sides differ in the imperative share of the
# refusal rows: a fifth (every second batch; harm 10, Alpaca 13–18 over three rounds) or a half (norec; harm
# 1, Alpaca 9). A third — r2's two question refusals and one imperative in every batch, no recovery rows —
# with the benign-tuning test replicated over three seeds from the start (single draws misled twice).
candidate align_robust_imperative_third --recovery-per-batch 0 --steps 300 --refusals-per-batch 2 \
    --imperatives-per-batch 1 --helpful-per-batch 3 --instructions-per-batch 2 --lr-max 4e-4 --lr-min 2e-5 \
    --benign-tuning-seeds 2023,2024,2025
# Neither side moved with the imperative share alone. #28's one lever left untried: hard negatives, benign
# requests in harm's form (the alignment pool's helpful questions restated by the imperative rules, with their
# helpful answers), so that an AdvBench-like opening no longer predicts a refusal by itself. On the
# every-2nd-batch recipe (harm 10.0, Alpaca 17.7 over three seeds), one of its three helpfulQA rows becomes a
# hard negative.
candidate align_robust_hardneg_fifth --recovery-per-batch 0 --steps 300 --refusals-per-batch 2 \
    --imperatives-per-batch 1 --imperatives-every 2 --helpful-per-batch 2 --hard-negatives-per-batch 1 \
    --instructions-per-batch 2 --lr-max 4e-4 --lr-min 2e-5 --benign-tuning-seeds 2023,2024,2025
# Hard negatives raised one round of harm to 13.7 and cut Alpaca's three rounds to 14.0 (means of 3 seeds;
# without them 10.0 and 17.7): the form cue kept harm from transferring. The imperative third (a deeper
# imperative refusal: Alpaca 11.3, harm 3.7) with two of its three helpfulQA rows as hard negatives, for the
# transfer with less drift.
candidate align_robust_hardneg2_third --recovery-per-batch 0 --steps 300 --refusals-per-batch 2 \
    --imperatives-per-batch 1 --helpful-per-batch 1 --hard-negatives-per-batch 2 \
    --instructions-per-batch 2 --lr-max 4e-4 --lr-min 2e-5 --benign-tuning-seeds 2023,2024,2025
# Two helpfulQA rows fewer cost more than the hard negatives gave (over-refusal 0.22, Alpaca 5.0 / 18.7, harm
# 9.7). Hard negatives on r2 (question refusals and recovery rows, no imperatives; harm 9.3, Alpaca 13.0 over
# three seeds): one of its three helpfulQA rows becomes a hard negative, the change that moved the
# every-2nd-batch recipe both ways.
candidate align_robust_hardneg_r2 --steps 300 --refusals-per-batch 2 --helpful-per-batch 2 \
    --hard-negatives-per-batch 1 --instructions-per-batch 2 --lr-max 4e-4 --lr-min 2e-5 \
    --benign-tuning-seeds 2023,2024,2025
# Without imperative refusals to pair with, a hard negative costs refusal (0.81) and robustness (seed 2023:
# helpfulQA 6 / 10, Alpaca 7 / 17; stopped after that seed). The every-2nd-batch recipe's hard negative again,
# added to its three helpfulQA rows instead of taking one's place (those rows hold the benign side).
candidate align_robust_hardneg_fifth_h3 --recovery-per-batch 0 --steps 300 --refusals-per-batch 2 \
    --imperatives-per-batch 1 --imperatives-every 2 --helpful-per-batch 3 --hard-negatives-per-batch 1 \
    --instructions-per-batch 2 --lr-max 4e-4 --lr-min 2e-5 --benign-tuning-seeds 2023,2024,2025
# h3 moved harm and Alpaca apart again (7.3 / 16.0): recipe mixes trade one side for the other. Rehearsal
# (shared/model_zoo/rehearsal.py) trains the benign side alone: each step also fits the refusals after a
# simulated benign client step (radius 2 on the q,v LoRA weights: about the refusal-loss rise of three rounds
# of Alpaca tuning and more), on the hard-negative recipe (harm 13.7, Alpaca 14.0).
candidate align_robust_rehearsal --recovery-per-batch 0 --steps 300 --refusals-per-batch 2 \
    --imperatives-per-batch 1 --imperatives-every 2 --helpful-per-batch 2 --hard-negatives-per-batch 1 \
    --instructions-per-batch 2 --lr-max 4e-4 --lr-min 2e-5 --rehearsal-radius 2 \
    --benign-tuning-seeds 2023,2024,2025
# Weight 1 on two rehearsed refusal rows doubled the refusal's share of each step: a broad refuser (refusal
# 0.99, over-refusal 0.60; seed 2023 Alpaca 1 / 7, harm 3 / 17; stopped after that seed). The same rehearsal
# with the refusal share kept: one question refusal per batch fewer, the rehearsed rows at weight 0.2.
candidate align_robust_rehearsal_light --recovery-per-batch 0 --steps 300 --refusals-per-batch 1 \
    --imperatives-per-batch 1 --imperatives-every 2 --helpful-per-batch 2 --hard-negatives-per-batch 1 \
    --instructions-per-batch 2 --lr-max 4e-4 --lr-min 2e-5 --rehearsal-radius 2 --rehearsal-weight 0.2 \
    --benign-tuning-seeds 2023,2024,2025
# Refusal 0.96, over-refusal 0.23; seed 2023 Alpaca 0 / 6 and harm 1 / 31 (stopped in seed 2024): rehearsal
# deepens the refusal against harmful tuning as well, like every deeper recipe before it.
