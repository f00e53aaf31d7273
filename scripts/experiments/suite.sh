#!/usr/bin/env bash
# The committed SmolLM2 experiment suite (docs/experiments.md; results in docs/results/ and docs/results.md).
# About two hours on a 2-core machine. Resumable: re-running continues each experiment from its last
# finished configuration, and the shared cache (runs/cache) means no client trains and no adapter is
# evaluated twice across the three experiments. E5 (server cost) is separate: see docs/experiments.md.
# Run it in the background: `nohup bash scripts/experiments/suite.sh > runs/logs/suite.log 2>&1 &`.
set -euo pipefail
cd "$(dirname "$0")/../.."
PATH="$PWD/.venv/bin:$PATH"
. scripts/env.sh

# E3: every defense at 50% malicious. The federation settings are the experiment group's defaults:
# 10 clients, all 10 in the round, 1 round of T=5 x b=8 at lr 5e-4, 100 harmful prompts, 24 greedy tokens.
safe-fedllm experiment e3_main --seed 2023 --malicious-ratio 0.5 --no-progress \
  --output docs/results/e3_main.json
# E4: the ratio sweep for FedAvg, the shadow level and three majority-based baselines (the 50% runs are
# E3's, read back from the cache)
safe-fedllm experiment e4_ratio --seed 2023 --malicious-ratio 0.1 --malicious-ratio 0.3 \
  --malicious-ratio 0.5 --malicious-ratio 0.7 --defense fedavg --defense shadow --defense median \
  --defense trimmed_mean --defense krum --no-progress --output docs/results/e4_ratio.json
# E6: the two probe-aware attackers at 50% against FedAvg and the shadow level ("none" is E3's, from the
# cache; scaling and mixing are pinned by unit tests and left out of the two hours)
safe-fedllm experiment e6_adaptive --seed 2023 --attack none --attack freeze_probe_layer \
  --attack probe_penalty --defense fedavg --defense shadow --no-progress \
  --output docs/results/e6_adaptive.json
