"""The behavioural audit vs the shipped probe: AUROC per harmful source, calibrated rates, cost per update.

From the aligned base's LoRA init (the round-0 global adapter), trains `--updates` LoRA updates per data
source on disjoint client-pool shards (`--steps` x `--batch-size` samples at `--lr`, the local SFT every
client runs; a source too small for disjoint shards gets overlapping ones): benign sources helpfulQA,
Alpaca, Dolly; harmful sources MaliciousGen (the generator the probe was trained on, from the client pool)
and AdvBench goal -> affirmative target (no probe or client pool holds it: held out of the probe's
training). The audit uses no harmful training data at all and is
calibrated on benign updates only, so every harmful source is held out of the audit by construction.

Each update is scored by the audit (Δ harm preference on the private canaries vs the init) and by the
shipped probe (the last local step's layer-0 B delta, the client level's input; skipped when no probe
fits the model). Reports AUROC per harmful source (vs all benign updates), the threshold from half of the
benign updates at `--fpr` with the FPR on the other half and the TPR per source, and the wall-clock
cost: audit ms per update (batched, reference cached) vs local training ms per update. Prints counts and
metrics only, never data text.

    python scripts/experiments/audit_eval.py --model smollm2-135m --output docs/results/audit_eval.json
    python scripts/experiments/audit_eval.py --model tiny-llama --updates 2 --steps 3 --canaries 8  # smoke
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from probes.metrics import auroc
from services.probe_service.errors import ProbeServiceError
from services.probe_service.scoring import ProbeBank, ProbeSelector
from services.probe_service.settings import ProbeServiceSettings
from shared.audit import (
    CanarySettings,
    HarmPreferenceAudit,
    draw_canaries,
    false_positive_rate,
    threshold_for_fpr,
)
from shared.config import LoraSettings, runtime_settings
from shared.data.pools import build_pools
from shared.lora import attach_lora, get_lora_state, set_lora_state
from shared.model_zoo import load_base_model
from shared.prompting import tokenize_sft
from shared.training import train_lora_steps

BENIGN, HARMFUL = "benign", "harmful"


def data_sources(data_dir: Path) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """name -> (label, (instruction, response) rows): the client pool, plus the held-out AdvBench targets."""
    client = build_pools(data_dir).client
    with (data_dir / "advbench" / "harmful_behaviors.csv").open(encoding="utf-8", newline="") as handle:
        advbench = [(row["goal"], row["target"]) for row in csv.DictReader(handle)]
    return {
        "helpful": (BENIGN, [(x.instruction, x.response) for x in client.helpful]),
        "alpaca": (BENIGN, [(x.instruction, x.response) for x in client.alpaca]),
        "dolly": (BENIGN, [(x.instruction, x.response) for x in client.dolly]),
        "maliciousgen": (HARMFUL, [(p.instruction, p.harmful) for p in client.harmful]),
        "advbench_target": (HARMFUL, advbench),
    }


def probe_scorer(model: str, lora: LoraSettings):  # type: ignore[no-untyped-def]
    """(probe_id, spec, bank) of the shipped probe for this model, or None when there is none."""
    bank = ProbeBank(ProbeServiceSettings().artifacts_dir)
    try:
        manifest = bank.resolve(ProbeSelector(None, model, lora.r, tuple(lora.target_modules)))
    except ProbeServiceError:
        return None
    return manifest.probe_id, manifest.feature_spec, bank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--updates", type=int, default=12, help="Updates per data source.")
    parser.add_argument("--steps", type=int, default=5, help="Local optimizer steps per update.")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--canaries", type=int, default=64)
    parser.add_argument(
        "--fpr", type=float, default=0.02, help="Target false-positive rate of the threshold."
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--output", type=Path, default=Path("runs/audit_eval.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lora, canary_settings = LoraSettings(), CanarySettings(size=args.canaries, max_seq_len=args.max_seq_len)
    data_dir = runtime_settings().data_dir

    loaded = load_base_model(args.model)
    audit = HarmPreferenceAudit(
        copy.deepcopy(loaded.model),
        loaded.tokenizer,
        lora,
        draw_canaries(build_pools(data_dir), canary_settings),
        canary_settings,
    )
    trainer = attach_lora(loaded.model, lora)
    init = get_lora_state(trainer)
    probe = probe_scorer(args.model, lora)

    rng = np.random.default_rng(args.seed)
    per_update = args.steps * args.batch_size
    labels, sources, states, probe_scores, train_s = [], [], [], [], []
    disjoint: dict[str, bool] = {}
    for name, (label, rows) in data_sources(data_dir).items():
        if len(rows) < per_update:
            raise SystemExit(f"{name}: {len(rows)} rows cannot fill a shard of {per_update}")
        order = rng.permutation(len(rows))
        disjoint[name] = len(rows) >= args.updates * per_update  # else shards overlap (small sources)
        for k in range(args.updates):
            picks = (
                order[k * per_update : (k + 1) * per_update]
                if disjoint[name]
                else rng.choice(len(rows), per_update, replace=False)
            )
            shard = [rows[i] for i in picks]
            examples = [tokenize_sft(loaded.tokenizer, q, a, args.max_seq_len) for q, a in shard]
            set_lora_state(trainer, init)
            torch.manual_seed(args.seed * 1000 + k)
            start = time.perf_counter()
            result = train_lora_steps(
                trainer, examples, loaded.tokenizer, lr=args.lr, steps=args.steps, batch_size=args.batch_size
            )
            train_s.append(time.perf_counter() - start)
            states.append(result.lora_state)
            labels.append(label)
            sources.append(name)
            if probe is not None:
                probe_id, spec, bank = probe
                delta = result.b_snapshots[-1:] - spec.raw(init)
                probe_scores.append(float(bank.score(probe_id, delta)[0]))
        print(f"trained {args.updates} updates on {name}", flush=True)

    start = time.perf_counter()
    audit.reference_preference(init)
    reference_s = time.perf_counter() - start
    start = time.perf_counter()
    audit_scores = np.asarray([score for score, _, _ in audit.audit(states, init)])
    audit_s = (time.perf_counter() - start) / len(states)

    labels_a, sources_a = np.asarray(labels), np.asarray(sources)
    benign = np.flatnonzero(labels_a == BENIGN)
    calibration = rng.permutation(benign)[: len(benign) // 2]
    held_benign = np.setdiff1d(benign, calibration)
    threshold = threshold_for_fpr(audit_scores[calibration], args.fpr)
    per_source = {}
    for name in sorted(set(sources_a[labels_a == HARMFUL])):
        rows = np.concatenate([benign, np.flatnonzero(sources_a == name)])
        y = (labels_a[rows] == HARMFUL).astype(int)
        per_source[name] = {
            "audit_auroc": auroc(y, audit_scores[rows]),
            "probe_auroc": auroc(y, np.asarray(probe_scores)[rows]) if probe_scores else None,
            "audit_tpr_at_threshold": float(np.mean(audit_scores[sources_a == name] >= threshold)),
            "audit_mean": float(audit_scores[sources_a == name].mean()),
        }
    result = {
        "command": " ".join(["python", *map(shlex.quote, sys.argv)]),
        "model": args.model,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "updates": {name: int((sources_a == name).sum()) for name in dict.fromkeys(sources)},
        "disjoint_shards": disjoint,
        "probe": probe[0] if probe else None,
        "per_harmful_source": per_source,
        "audit_benign_mean_by_source": {
            name: float(audit_scores[sources_a == name].mean())
            for name in dict.fromkeys(sources_a[labels_a == BENIGN])
        },
        "calibration": {
            "target_fpr": args.fpr,
            "threshold": threshold,
            "calibration_benign": len(calibration),
            "held_out_benign_fpr": false_positive_rate(audit_scores[held_benign], threshold),
            "held_out_benign": len(held_benign),
        },
        "cost": {
            "audit_ms_per_update": 1000 * audit_s,
            "reference_ms_per_round": 1000 * reference_s,
            "local_training_ms_per_update": 1000 * float(np.mean(train_s)),
            "audit_share_if_after_training": audit_s / (audit_s + float(np.mean(train_s))),
            "canaries": args.canaries,
            "threads": args.threads,
            "dtype": str(next(audit.model.parameters()).dtype),
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
