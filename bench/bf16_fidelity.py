"""Does a bf16 frozen base keep LoRA training faithful? fp32 vs bf16 from the same seed and batches.

Per step: both losses, and the cosine between the two runs' layer-0 ΔB (B_t − B_0, the probe's feature).
bf16 holds where the cosines stay near 1 and the losses within noise. On a CPU without bf16 matrix
instructions bf16 is emulated and slow (see bench/local_compute_bench.py): run SmolLM2 where bf16 is native;
`--model tiny-llama` checks the code path anywhere.

    python bench/bf16_fidelity.py --model smollm2-135m --output runs/bf16_fidelity.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.config import LoraSettings, runtime_settings
from shared.data.pools import build_pools
from shared.lora import attach_lora
from shared.model_zoo import load_base_model
from shared.prompting import tokenize_sft
from shared.training import train_lora_steps


def trajectory(model_name: str, dtype: str, samples: list, steps: int, batch: int, lr: float) -> dict:
    loaded = load_base_model(model_name, compute_dtype=dtype)
    model = attach_lora(loaded.model, LoraSettings())
    examples = [tokenize_sft(loaded.tokenizer, q, a, 128) for q, a in samples]
    torch.manual_seed(2023)
    result = train_lora_steps(model, examples, loaded.tokenizer, lr=lr, steps=steps, batch_size=batch)
    return {"losses": result.losses, "delta_b": result.b_snapshots}  # B_0 = 0 (PEFT init): B_t is ΔB


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=Path("runs/bf16_fidelity.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pool = build_pools(runtime_settings().data_dir).probe
    samples = [(p.instruction, p.harmful) for p in pool.harmful[: args.steps * args.batch_size]]
    runs = {
        d: trajectory(args.model, d, samples, args.steps, args.batch_size, args.lr)
        for d in ("float32", "bfloat16")
    }
    a, b = runs["float32"]["delta_b"], runs["bfloat16"]["delta_b"]
    cosines = [
        float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-30)) for x, y in zip(a, b, strict=True)
    ]
    result = {
        "command": " ".join(["python", *sys.argv]),
        "model": args.model,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "loss_float32": runs["float32"]["losses"],
        "loss_bfloat16": runs["bfloat16"]["losses"],
        "delta_b_cosine_per_step": cosines,
        "delta_b_relative_norm_per_step": [
            float(np.linalg.norm(y) / (np.linalg.norm(x) + 1e-30)) for x, y in zip(a, b, strict=True)
        ],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "command"}, indent=2))


if __name__ == "__main__":
    main()
