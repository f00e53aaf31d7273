"""Local compute of a client on this CPU: LoRA training steps and greedy generation, float32 vs bfloat16.

Measured in the same run: the machine's matmul peak in each dtype (1024² GEMMs), a LoRA step (SmolLM2,
q/v r=8, seq <= 128, MaliciousGen-length samples from the probe pool) at batch 4/8/16, and greedy generation
tokens/s (8 prompts × 32 new tokens), each as bf16/fp32 speed-up and as the fraction of the dtype's matmul
peak the step reaches (FLOPs ≈ 4 · matmul parameters · padded tokens: forward plus input gradients; the
frozen weights need no weight gradients). bf16 here means the frozen base cast once to bfloat16 with fp32
LoRA parameters and optimizer state (shared/precision.py), the form `SAFE_FEDLLM_COMPUTE_DTYPE` selects.

On a CPU without bf16 matrix instructions bf16 GEMMs are emulated (two orders of magnitude slower); the
bf16 training and generation rows are then skipped (they would take hours) unless `--force-bf16`, and the
matmul peaks say why.

    python bench/local_compute_bench.py --output docs/results/bench_local_compute.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.config import LoraSettings, runtime_settings
from shared.data.pools import build_pools
from shared.evaluation.generation import generate_greedy
from shared.lora import attach_lora
from shared.model_zoo import load_base_model
from shared.precision import cpu_flags, native_bf16
from shared.prompting import collate, tokenize_sft
from shared.training import LoraStepper


def matmul_peak(dtype: torch.dtype, size: int = 1024, seconds: float = 2.0) -> float:
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    count, begin = 0, time.perf_counter()
    while time.perf_counter() - begin < seconds:
        a @ b
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - begin) / 1e9


def matmul_parameters(model: torch.nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def train_rows(dtype: str, batches: list[int], steps: int, samples: list) -> list[dict]:
    loaded = load_base_model("smollm2-135m", compute_dtype=dtype)
    model = attach_lora(loaded.model, LoraSettings())
    n_params = matmul_parameters(loaded.model)
    rows = []
    for batch_size in batches:
        stepper = LoraStepper(model)
        examples = [tokenize_sft(loaded.tokenizer, q, a, 128) for q, a in samples[: batch_size * (steps + 1)]]
        timings, tokens = [], 0
        for index in range(steps + 1):  # the first step warms up
            batch = collate(
                examples[index * batch_size : (index + 1) * batch_size], loaded.tokenizer.pad_token_id
            )
            begin = time.perf_counter()
            stepper.step(batch, 1e-4)
            if index:
                timings.append(time.perf_counter() - begin)
                tokens += batch["input_ids"].numel()
        seconds = sorted(timings)[len(timings) // 2]
        rows.append(
            {
                "dtype": dtype,
                "batch_size": batch_size,
                "step_seconds_median": seconds,
                "step_seconds": timings,
                "gflops_per_s": 4 * n_params * tokens / sum(timings) / 1e9,
            }
        )
        print(f"train {dtype:<8} batch {batch_size:>2}: {seconds:.2f} s/step", flush=True)
    return rows


def generation_row(dtype: str, prompts: list[str], new_tokens: int) -> dict:
    loaded = load_base_model("smollm2-135m", compute_dtype=dtype)
    generate_greedy(loaded.model, loaded.tokenizer, prompts[:2], max_new_tokens=4, progress=False)
    begin = time.perf_counter()
    outputs = generate_greedy(
        loaded.model,
        loaded.tokenizer,
        prompts,
        max_new_tokens=new_tokens,
        batch_size=len(prompts),
        progress=False,
    )
    seconds = time.perf_counter() - begin
    generated = sum(len(loaded.tokenizer(o)["input_ids"]) for o in outputs)  # count only, text is discarded
    row = {"dtype": dtype, "prompts": len(prompts), "max_new_tokens": new_tokens, "seconds": seconds}
    row["tokens_per_s"] = len(prompts) * new_tokens / seconds
    row["generated_tokens"] = generated
    print(f"generate {dtype:<8}: {row['tokens_per_s']:.1f} tokens/s", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument(
        "--steps", type=int, default=3, help="Timed steps per batch size (after one warm-up)."
    )
    parser.add_argument("--force-bf16", action="store_true", help="Run bf16 rows without native bf16.")
    parser.add_argument("--output", type=Path, default=Path("runs/bench_local_compute.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pool = build_pools(runtime_settings().data_dir).probe
    samples = [(p.instruction, p.harmful) for p in pool.harmful]
    prompts = [p.instruction for p in pool.harmful[:8]]
    peaks = {"float32": matmul_peak(torch.float32), "bfloat16": matmul_peak(torch.bfloat16)}
    print(f"matmul peak GFLOP/s: fp32 {peaks['float32']:.1f}, bf16 {peaks['bfloat16']:.1f}", flush=True)
    dtypes = ["float32"] + (["bfloat16"] if native_bf16() or args.force_bf16 else [])
    train = [row for dtype in dtypes for row in train_rows(dtype, args.batches, args.steps, samples)]
    generation = [generation_row(dtype, prompts, 32) for dtype in dtypes]
    for row in train:
        row["fraction_of_matmul_peak"] = row["gflops_per_s"] / peaks[row["dtype"]]
    by = {(r["dtype"], r["batch_size"]): r["step_seconds_median"] for r in train}
    speedups = {
        f"train_batch_{b}": by[("float32", b)] / by[("bfloat16", b)]
        for b in args.batches
        if ("bfloat16", b) in by
    }
    if len(generation) == 2:
        speedups["generation"] = generation[1]["tokens_per_s"] / generation[0]["tokens_per_s"]
    result = {
        "command": " ".join(["python", *sys.argv]),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": args.threads,
            "native_bf16": native_bf16(),
            "bf16_flags": sorted(f for f in cpu_flags() if "bf16" in f or f.startswith("amx")),
            "torch": torch.__version__,
        },
        "matmul_peak_gflops": peaks,
        "bf16_vs_fp32_matmul_peak": peaks["bfloat16"] / peaks["float32"],
        "bf16_rows": "measured"
        if "bfloat16" in dtypes
        else "skipped: no bf16 matrix instructions on this CPU",
        "train": train,
        "generation": generation,
        "bf16_speedup": speedups,
        "default_compute_dtype": "bfloat16" if native_bf16() else "float32",
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
