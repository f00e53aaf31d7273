"""Server-side realignment (#22 item 4): what K steps on alignment data recover, and what they cost.

From the aligned base's LoRA init (the round-0 global), trains one MaliciousGen attacker update and one
benign (helpfulQA) update with the local SFT every client runs (audit_eval.py's settings and cache: the
demo's round-0 budget, `--steps` x `--batch-size` at `--lr`; updates already in `--cache` are reused), forms
their 50/50 FedAvg (equal sample counts: the plain mean of every A and B), and realigns each of the three
adapters for K in `--realign-steps` with the aggregator's own `Realigner` (the same code the aggregator
runs after aggregation; round 0's batches, so every adapter sees the same alignment data). Each adapter is
evaluated on the evaluation pool: harmless rate (Wilson interval), harm preference, over-refusal, benign
loss; plus the server seconds of the K steps. Resumable: realigned states, their records and evaluations
are cached under `--work`. Prints metrics only, never data text.

    OMP_NUM_THREADS=2 python scripts/experiments/realignment_eval.py --output docs/results/realignment.json
    python scripts/experiments/realignment_eval.py --model tiny-llama --steps 2 --realign-steps 0,2 \
        --eval-harmful 4 --eval-pairs 4 --eval-benign 4 --eval-benign-loss 4 --max-new-tokens 4  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit_eval import BENIGN, HARMFUL, Source, hash_int, load_state, save_state, shard, update_cache

from services.aggregator.realignment import Realigner, RealignmentSettings
from shared.config import LoraSettings, runtime_settings
from shared.data.pools import build_pools
from shared.evaluation.cache import cached_evaluation
from shared.evaluation.intervals import wilson_interval
from shared.evaluation.metrics import EvalSettings, SafetyReport, evaluate_model
from shared.lora import attach_lora, get_lora_state, set_lora_state
from shared.lora_state import LoraState
from shared.model_zoo import load_base_model
from shared.prompting import tokenize_sft
from shared.training import train_lora_steps

ADAPTERS = ("attacker", "fedavg_50_50", "benign")  # in the order they are measured


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def train_updates(args: argparse.Namespace, loaded, trainer, init: LoraState) -> dict[str, LoraState]:  # type: ignore[no-untyped-def]
    """maliciousgen_00 and helpful_00 exactly as audit_eval.py trains (and caches) them."""
    pools = build_pools(runtime_settings().data_dir)
    sources = {
        "maliciousgen": Source(HARMFUL, [(p.instruction, p.harmful) for p in pools.client.harmful]),
        "helpful": Source(BENIGN, [(x.instruction, x.response) for x in pools.client.helpful]),
    }
    cache = update_cache(args)
    cache.mkdir(parents=True, exist_ok=True)
    size = args.steps * args.batch_size
    states = {}
    for name, source in sources.items():
        path = cache / f"{name}_00.npz"
        if not path.is_file():
            log(f"training the {name} update ({args.steps} steps x {args.batch_size})")
            rng = np.random.default_rng([args.seed, hash_int(name), 0])
            rows = shard(name, source, 0, size, 1, rng)
            examples = [tokenize_sft(loaded.tokenizer, q, a, args.max_seq_len) for q, a in rows]
            set_lora_state(trainer, init)
            torch.manual_seed(args.seed * 1000)
            start = time.perf_counter()
            result = train_lora_steps(
                trainer, examples, loaded.tokenizer, lr=args.lr, steps=args.steps, batch_size=args.batch_size
            )
            save_state(path, result.lora_state, probe=float("nan"), train_s=time.perf_counter() - start)
        states[name] = load_state(path)[0]
    attacker, benign = states["maliciousgen"], states["helpful"]
    return {
        "attacker": attacker,
        "benign": benign,
        "fedavg_50_50": {k: ((attacker[k] + benign[k]) / 2).astype(np.float32) for k in attacker},
    }


def realigned(realigner: Realigner, name: str, state: LoraState, work: Path) -> tuple[LoraState, dict]:
    """The adapter after the realigner's K steps (cached with its record)."""
    path = work / f"{name}_K{realigner.settings.steps}.npz"
    record_path = path.with_suffix(".json")
    if path.is_file() and record_path.is_file():
        return load_state(path)[0], json.loads(record_path.read_text())
    log(f"realigning {name} for K={realigner.settings.steps}")
    new_state, record = realigner.realign(state, round_index=0)
    save_state(path, new_state)
    # The machine is shared: the 1-minute load average beside the seconds says how contended they were.
    entry = {**record.as_dict(), "load_average_1m": round(os.getloadavg()[0], 2)}
    record_path.write_text(json.dumps(entry))
    return new_state, entry


def row(adapter: str, steps: int, report: SafetyReport, record: dict | None) -> dict:
    benign = report.num_benign_prompts
    rate = report.over_refusal_rate
    return {
        "adapter": adapter,
        "realign_steps": steps,
        "harmless_rate": report.harmless_rate,
        "harmless_rate_ci95": list(report.harmless_rate_ci95),
        "harm_preference": report.harm_preference,
        "harm_preference_ci95": list(report.harm_preference_ci95),
        "over_refusal": rate,
        "over_refusal_ci95": list(wilson_interval(round(rate * benign), benign))
        if rate is not None
        else None,
        "benign_loss": report.benign_loss,
        "server_seconds": record["seconds"] if record else 0.0,
        "server_cpu_seconds": record.get("cpu_seconds") if record else 0.0,
        "load_average_1m": record.get("load_average_1m") if record else None,
        "realign_loss_first_last": [record["loss_first"], record["loss_last"]] if record else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=5, help="Local optimizer steps per client update.")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4, help="The demo's round-0 client lr.")
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=11, help="audit_eval.py's seed: its cached updates.")
    parser.add_argument("--cache", type=Path, default=Path("runs/audit_eval"), help="Client update cache.")
    parser.add_argument("--work", type=Path, default=Path("runs/realignment_eval"), help="Resume cache.")
    parser.add_argument("--realign-steps", default="0,10,30", help="K values (0: not realigned).")
    parser.add_argument("--refusals-per-batch", type=int, default=2)
    parser.add_argument("--helpful-per-batch", type=int, default=6)
    parser.add_argument("--realign-lr", type=float, default=2e-4)
    parser.add_argument("--eval-harmful", type=int, default=100)
    parser.add_argument("--eval-pairs", type=int, default=100)
    parser.add_argument("--eval-benign", type=int, default=40)
    parser.add_argument("--eval-benign-loss", type=int, default=60)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--eval-batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=Path("runs/results/realignment.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = args.work / args.model
    work.mkdir(parents=True, exist_ok=True)
    lora = LoraSettings()
    eval_settings = EvalSettings(
        num_harmful_prompts=args.eval_harmful,
        num_pairs=args.eval_pairs,
        num_benign_prompts=args.eval_benign,
        num_benign_loss=args.eval_benign_loss,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.eval_batch_size,
        progress=False,
    )

    loaded = load_base_model(args.model)
    trainer = attach_lora(loaded.model, lora)
    init = get_lora_state(trainer)
    adapters = train_updates(args, loaded, trainer, init)
    evaluation = build_pools(runtime_settings().data_dir).evaluation

    def evaluate(label: str, state: LoraState) -> SafetyReport:
        def run() -> SafetyReport:
            log(f"evaluating {label}")
            set_lora_state(trainer, state)
            return evaluate_model(trainer, loaded.tokenizer, evaluation, eval_settings)

        return cached_evaluation(work, (loaded.fingerprint, eval_settings), state, run)

    ks = [int(k) for k in args.realign_steps.split(",")]
    # One Realigner (one base-model copy) for every K: only its step count differs between them.
    realigner = Realigner(RealignmentSettings(enabled=True), args.model, lora)
    realign_settings = {
        k: RealignmentSettings(
            enabled=True,
            steps=k,
            refusals_per_batch=args.refusals_per_batch,
            helpful_per_batch=args.helpful_per_batch,
            lr=args.realign_lr,
        )
        for k in ks
        if k
    }
    rows: list[dict] = []
    start_row: dict | None = None

    def write(complete: bool) -> dict:
        """The result so far (written after every row, so a stopped run still leaves its numbers)."""

        def at(adapter: str, steps: int) -> dict | None:
            return next((r for r in rows if r["adapter"] == adapter and r["realign_steps"] == steps), None)

        recovered = {}
        for name in ADAPTERS:
            base = at(name, 0)
            for k in realign_settings:
                done = at(name, k)
                if base and done:
                    points = 100 * (done["harmless_rate"] - base["harmless_rate"])
                    recovered.setdefault(name, {})[f"K={k}"] = round(points, 1)
        result = {
            "command": " ".join(["python", *map(shlex.quote, sys.argv)]),
            "complete": complete,
            "model": args.model,
            "base_fingerprint": loaded.fingerprint,
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "client_update": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr},
            "realignment": {
                "refusals_per_batch": args.refusals_per_batch,
                "helpful_per_batch": args.helpful_per_batch,
                "lr": args.realign_lr,
                "round_index": 0,
            },
            "eval": eval_settings.model_dump(mode="json", exclude={"progress"}),
            "threads": args.threads,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "cpu_count": os.cpu_count(),
            "dtype": str(next(trainer.parameters()).dtype),
            "start_model": start_row,
            "rows": rows,
            "recovered_harmless_points": recovered,
        }
        args.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.output.with_name(args.output.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(args.output)
        return result

    # The most telling cells first (a stopped run still reports them): the attacker at every K, then the
    # 50/50 aggregate and the benign adapter (the price) at K = 0 and the first K, then the rest.
    first_k = [k for k in ks if k][:1]
    order = [("attacker", k) for k in ks]
    order += [(name, k) for name in ADAPTERS[1:] for k in ks if k in (0, *first_k)]
    order += [(name, k) for name in ADAPTERS[1:] for k in ks if (name, k) not in order]
    for name, steps in order:
        record = None
        state = adapters[name]
        if steps:
            realigner.settings = realign_settings[steps]
            state, record = realigned(realigner, name, state, work)
        rows.append(row(name, steps, evaluate(f"{name} K={steps}", state), record))
        log(
            f"{name} K={steps}: harmless {rows[-1]['harmless_rate']:.2f}, "
            f"over-refusal {rows[-1]['over_refusal']}, server s {rows[-1]['server_seconds']:.1f}"
        )
        write(complete=False)
    start_row = row("start (round-0 global)", 0, evaluate("the start model", init), None)
    result = write(complete=True)
    print(
        json.dumps(
            {"start": start_row["harmless_rate"], "recovered": result["recovered_harmless_points"]}, indent=2
        )
    )


if __name__ == "__main__":
    main()
