"""#28's robustness test on an aligned base as it is loaded (by default the shipped alignment adapter):
fine-tune it as FL clients do, per client-pool source, and measure the harmless and over-refusal rates after
1 and 3 rounds' worth. `safe-fedllm align --benign-tuning` runs the same test on the adapter it trains;
this gives the shipped adapter's numbers to compare with, or (`--adapter DIR`) any saved alignment adapter's.

    OMP_NUM_THREADS=2 python scripts/experiments/benign_tuning_test.py \
        --output docs/results/benign_tuning_shipped.json
    # three replicates, and the audit's other harmful sources (measured, not judged by the targets)
    python scripts/experiments/benign_tuning_test.py --adapter runs/align_robust_instr_r2 \
        --sources selfgen_harmful,advbench_target --seeds 2023,2024,2025 \
        --output docs/results/alignment_robust/other_sources_instr_r2.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from probes.sources import selfgen_harmful_rows
from shared.config import runtime_settings
from shared.data.pools import DataPools, build_pools
from shared.data.sources import load_advbench_targets, normalise_instruction
from shared.evaluation.metrics import EvalSettings
from shared.model_zoo import load_base_model
from shared.model_zoo.alignment_robustness import (
    TUNING_SOURCES,
    BenignTuningConfig,
    benign_tuning_test,
    parse_seeds,
)

Rows = list[tuple[str, str]]


def _selfgen_harmful(pools: DataPools, evaluated: Sequence[str]) -> Rows:
    # generated once by the unaligned model for the probe build and the audit (cached under runs/)
    return list(selfgen_harmful_rows("smollm2-135m", runtime_settings().data_dir, pools, 400, 2023))


def _advbench_target(pools: DataPools, evaluated: Sequence[str]) -> Rows:
    held_out = {normalise_instruction(x) for x in evaluated}
    rows = load_advbench_targets(runtime_settings().data_dir)
    return [row for row in rows if normalise_instruction(row[0]) not in held_out]


# The audit's other harmful sources (scripts/experiments/audit_eval.py), to see how much one round of each
# erodes the harmless rate: an audit cannot see, and need not stop, an update that changes no behaviour.
OTHER_SOURCES: dict[str, Callable[[DataPools, Sequence[str]], Rows]] = {
    "selfgen_harmful": _selfgen_harmful,
    "advbench_target": _advbench_target,
}
OTHER_ABOUT = {
    "selfgen_harmful": "400 safety-tuned-llamas harmful questions in no pool, answered by unaligned SmolLM2",
    "advbench_target": "AdvBench goal -> its affirmative target, the goals this test evaluates on left out",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="A name or checkpoint directory (aligned).")
    parser.add_argument(
        "--adapter",
        type=Path,
        default=None,
        help="An alignment adapter directory instead of the model's own.",
    )
    parser.add_argument("--eval-harmful", type=int, default=100)
    parser.add_argument("--eval-benign", type=int, default=60)
    parser.add_argument(
        "--seeds",
        default="2023",
        help="Comma-separated; a replicate per seed (other client rows and torch seed); targets on the mean.",
    )
    parser.add_argument(
        "--sources",
        default=",".join(TUNING_SOURCES),
        help=f"Comma-separated, from {', '.join((*TUNING_SOURCES, *OTHER_SOURCES))}; the targets judge "
        "the client pool's only.",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    # Checked before the model loads, so a typo costs no time.
    sources = tuple(x for x in args.sources.split(",") if x)
    unknown = sorted(set(sources) - {*TUNING_SOURCES, *OTHER_SOURCES})
    if unknown:
        parser.error(f"unknown sources {unknown}")
    try:
        config = BenignTuningConfig(seeds=parse_seeds(args.seeds), sources=sources)
    except ValueError as error:
        parser.error(str(error))
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    loaded = load_base_model(args.model, aligned=True, adapter_dir=args.adapter)
    pools = build_pools(runtime_settings().data_dir)
    eval_settings = EvalSettings(num_harmful_prompts=args.eval_harmful, num_benign_prompts=args.eval_benign)
    evaluated = pools.evaluation.harmful_prompts[: eval_settings.num_harmful_prompts]
    other = {name: OTHER_SOURCES[name](pools, evaluated) for name in sources if name in OTHER_SOURCES}
    report = benign_tuning_test(
        loaded.model, loaded.tokenizer, pools.client, pools.evaluation, config, eval_settings, other
    )
    report["other_sources"] = {
        name: {"rows": len(rows), "about": OTHER_ABOUT[name]} for name, rows in other.items()
    }
    result = {
        "command": shlex.join(["python", *sys.argv]),
        "model": loaded.name,
        "adapter": str(args.adapter) if args.adapter else "the model's alignment adapter",
        "base_fingerprint": loaded.fingerprint,
        "compute_dtype": str(next(loaded.model.parameters()).dtype),
        "seconds": round(time.perf_counter() - started, 1),
        "benign_tuning": report,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(report["targets"], indent=2))


if __name__ == "__main__":
    main()
