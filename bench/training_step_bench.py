"""A LoRA training step on this CPU: the response loss against the full forward's loss, with glibc's allocator
and with tcmalloc (which `scripts/env.sh` preloads where it is installed).

`shared.training.response_loss` projects onto the vocabulary at labelled (response) positions only, where
`model(**batch).loss` projects every position; glibc returns every freed block over 32 MB (a step's logits)
to the OS and page-faults it back in on the next step, tcmalloc keeps it for reuse. Each allocator runs in its
own process (preloaded at start-up); every figure comes from this run, and the ratios are against its first
row.

    python bench/training_step_bench.py --output docs/results/bench_training_step.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _tcmalloc() -> str | None:
    """The library scripts/env.sh preloads on this machine (tcmalloc where installed), asked of env.sh."""
    root = Path(__file__).resolve().parents[1]
    script = 'unset LD_PRELOAD; . scripts/env.sh; printf %s "${LD_PRELOAD:-}"'
    preload = subprocess.run(["bash", "-c", script], cwd=root, capture_output=True, text=True, check=True)
    return preload.stdout or None


def _measure(model_name: str, steps: int, batch_size: int) -> dict[str, float]:
    """ms per step (AdamW over q/v r=8 LoRA, client-pool rows at T <= 128) for each loss; in this process."""
    import torch

    from shared.config import LoraSettings, runtime_settings
    from shared.data.pools import build_pools
    from shared.lora import attach_lora
    from shared.model_zoo import load_base_model
    from shared.prompting import collate, tokenize_sft
    from shared.training import LoraStepper, response_loss

    torch.manual_seed(0)
    loaded = load_base_model(model_name, aligned=False)
    model = attach_lora(loaded.model, LoraSettings(r=8, alpha=16, target_modules=("q_proj", "v_proj")))
    rows = build_pools(runtime_settings().data_dir).client.helpful[:batch_size]
    batch = collate(
        [tokenize_sft(loaded.tokenizer, x.instruction, x.response, 128) for x in rows],
        loaded.tokenizer.pad_token_id,
    )
    objectives = {
        "full forward loss": lambda b: model(**b).loss,
        "response loss": lambda b: response_loss(model, b),
    }
    out: dict[str, float] = {}
    for name, objective in objectives.items():
        stepper = LoraStepper(model, objective=objective)
        stepper.step(batch, 0.0)  # warm-up
        started = time.perf_counter()
        for _ in range(steps):
            stepper.step(batch, 0.0)
        out[name] = (time.perf_counter() - started) / steps * 1000
    return out


def _child(model_name: str, steps: int, batch_size: int, preload: str | None) -> dict[str, float]:
    env = dict(os.environ)
    kept = [p for p in env.pop("LD_PRELOAD", "").split(":") if p and "tcmalloc" not in p]
    if preload:
        kept.insert(0, preload)
    if kept:
        env["LD_PRELOAD"] = ":".join(kept)
    code = (
        "import json, sys; sys.path.insert(0, '.'); from bench.training_step_bench import _measure; "
        f"print(json.dumps(_measure({model_name!r}, {steps}, {batch_size})))"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["tiny-llama", "smollm2-135m"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    rows = []
    for model_name in args.models:
        tcmalloc = _tcmalloc()
        allocators = [("glibc", None)] + ([("tcmalloc", tcmalloc)] if tcmalloc else [])
        for allocator_name, preload in allocators:
            for loss, ms in _child(model_name, args.steps, args.batch_size, preload).items():
                rows.append(
                    {"model": model_name, "allocator": allocator_name, "loss": loss, "ms_per_step": ms}
                )
    print(f"{'model':14} {'allocator':14} {'loss':18} {'ms/step':>8} {'speed-up':>8}")
    for row in rows:
        first = next(r for r in rows if r["model"] == row["model"])
        row["speed_up"] = first["ms_per_step"] / row["ms_per_step"]
        print(
            f"{row['model']:14} {row['allocator']:14} {row['loss']:18} {row['ms_per_step']:8.0f} "
            f"{row['speed_up']:7.2f}x"
        )
    if args.output:
        import torch

        meta = {
            "command": " ".join(["python", *sys.argv]),
            "torch_threads": torch.get_num_threads(),
            "compute_dtype": os.environ.get("SAFE_FEDLLM_COMPUTE_DTYPE", "auto"),
            "steps": args.steps,
            "batch_size": args.batch_size,
        }
        args.output.write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
