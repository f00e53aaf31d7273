"""Does the audit separate attacked rounds from clean ones when it scores the round's aggregate?

`audit_eval.py` and `audit_rounds.py` found that a single client's update, or its sum over rounds, moves
refusals as much on Alpaca or Dolly as on two of the three harmful sources: benign instruction tuning
undoes SmolLM2's alignment by itself. Averaging mixes the benign sources and dilutes each one's drift,
while attackers pull together. This script scores FedAvg aggregates of `--clients` cached round-0 updates
(`audit_eval.py`'s, from the aligned base's LoRA init) with the same three signals as `audit_rounds.py`:

- clean rounds: `--clients` updates drawn from the benign updates (helpfulQA, Alpaca, Dolly);
- attacked rounds, per harmful source and `--ratios` r: round(r · clients) updates of that source, the
  rest benign.

`--draws` random rounds each. Reports, per signal, the AUROC of attacked vs clean rounds per source and
ratio, the threshold at `--fpr` on half the clean rounds, its FPR on the other half and each TPR.
Counts and metrics only.

    python scripts/experiments/audit_aggregate.py --output docs/results/audit_aggregate.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from audit_eval import BENIGN, HARMFUL, begin_experiment, calibrate, data_sources, detection, load_state
from audit_rounds import SIGNALS, load_signals

from shared.lora_averaging import stack_states, weighted_mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--clients", type=int, default=10, help="Updates per round (the suite's 10).")
    parser.add_argument("--ratios", default="0.3,0.5", help="Malicious shares of an attacked round.")
    parser.add_argument("--draws", type=int, default=6, help="Rounds per (source, ratio); 2x clean.")
    parser.add_argument("--updates", type=int, default=10, help="Cached updates per source to draw from.")
    parser.add_argument("--canaries", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--fpr", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=11, help="audit_eval.py's seed (its cache).")
    parser.add_argument("--steps", type=int, default=5, help="audit_eval.py's --steps (its cache).")
    parser.add_argument("--batch-size", type=int, default=8, help="audit_eval.py's (its cache).")
    parser.add_argument("--lr", type=float, default=5e-4, help="audit_eval.py's (its cache).")
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--cache", type=Path, default=Path("runs/audit_eval"))
    parser.add_argument("--output", type=Path, default=Path("runs/results/audit_aggregate.json"))
    args = parser.parse_args()
    lora, data_dir, cache = begin_experiment(args)
    _, _, init, signals = load_signals(
        args.model, lora, data_dir, args.canaries, args.tokens, args.max_seq_len
    )
    sources = data_sources(args.model, data_dir)
    benign = [(n, k) for n, s in sources.items() if s.label == BENIGN for k in range(args.updates)]
    harmful = sorted(n for n, s in sources.items() if s.label == HARMFUL)
    ratios = [float(r) for r in args.ratios.split(",")]
    rng = np.random.default_rng(args.seed)

    rounds: list[tuple[str, float, list[tuple[str, int]]]] = []  # (source or "clean", ratio, members)
    for _ in range(2 * args.draws):
        rounds.append(("clean", 0.0, [benign[i] for i in rng.choice(len(benign), args.clients, False)]))
    for name in harmful:
        for ratio in ratios:
            bad = round(ratio * args.clients)
            for _ in range(args.draws):
                members = [(name, int(k)) for k in rng.choice(args.updates, bad, replace=False)]
                members += [benign[i] for i in rng.choice(len(benign), args.clients - bad, False)]
                rounds.append((name, ratio, members))

    out_dir = cache / f"aggregates-c{args.clients}-k{args.canaries}-t{args.tokens}"  # one JSON per round
    out_dir.mkdir(parents=True, exist_ok=True)
    scores: list[dict[str, float]] = []
    seconds: list[float] = []
    for index, (_, _, members) in enumerate(tqdm(rounds, desc="aggregates", unit="round")):
        path = out_dir / f"{index:03d}.json"
        if not path.is_file():
            states = [load_state(cache / f"{n}_{k:02d}.npz")[0] for n, k in members]
            aggregate = weighted_mean(stack_states(states, init), np.ones(len(states)))  # FedAvg, equal n
            start = time.perf_counter()
            raw = signals.measure(aggregate)
            raw["seconds"] = time.perf_counter() - start
            path.write_text(json.dumps({"members": members, **raw}))
        raw = json.loads(path.read_text())
        seconds.append(raw["seconds"])
        scores.append(signals.scores(raw))

    kinds = np.asarray([name for name, _, _ in rounds])
    ratio_of = np.asarray([ratio for _, ratio, _ in rounds])
    clean = np.flatnonzero(kinds == "clean")
    calibration, held = clean[: len(clean) // 2], clean[len(clean) // 2 :]
    report: dict[str, object] = {}
    for signal in SIGNALS:
        values = np.asarray([s[signal] for s in scores])
        thresholds = calibrate(values, calibration, held, args.fpr)
        entry: dict[str, object] = {**thresholds.report("clean"), "clean_mean": float(values[clean].mean())}
        for name in harmful:
            for ratio in ratios:
                attacked = values[(kinds == name) & (ratio_of == ratio)]
                entry[f"{name}@{ratio:g}"] = detection(values[clean], attacked, thresholds)
        report[signal] = entry
    result = {
        "command": " ".join(["python", *map(shlex.quote, sys.argv)]),
        "model": args.model,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rounds": {"clean": len(clean), "attacked_per_source_and_ratio": args.draws},
        "reference": signals.reference,
        "signals": report,
        "cost": {"signals_ms_per_aggregate": 1000 * float(np.mean(seconds)), "threads": args.threads},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    for signal in SIGNALS:
        entry = report[signal]
        print(signal, {k: round(v["auroc"], 3) for k, v in entry.items() if isinstance(v, dict)})


if __name__ == "__main__":
    main()
