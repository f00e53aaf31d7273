"""Checks the CUDA path on a machine with a GPU: device placement, bf16, one client round, one probe score.

    SAFE_FEDLLM_DEVICE=cuda python bench/gpu_check.py --model /models/Llama-3.1-8B-Instruct \
        --probes runs/probe_artifacts --output runs/gpu_check.json

It loads the model as the services do (`load_base_model`, SAFE_FEDLLM_DEVICE / SAFE_FEDLLM_COMPUTE_DTYPE),
checks that the frozen base sits on the GPU in bf16 (where the GPU supports it) with float32 rotary
frequencies and float32 LoRA master weights, rebuilds the base from its shared form as a client actor does
(logits equal), runs one benign client round (main and shadow branch) and scores the update with the newest
probe registered for this model in `--probes` (skipped, and said so, when none is). It prints one JSON
object and exits 1 on a failed check. `--device cpu` runs the same checks on the CPU (a smoke test of the
script itself; no GPU was available in the session that wrote it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="name or checkpoint directory")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--probes", type=Path, default=Path("probes/artifacts"), help="probe registry dir")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    os.environ["SAFE_FEDLLM_DEVICE"] = args.device

    import numpy as np
    import torch

    from research.clients.population import build_population
    from research.clients.trainer import ClientTrainer
    from services.probe_service.scoring import ProbeBank, ProbeSelector, adapter_features
    from shared.config import LocalTrainingConfig, LoraSettings, runtime_settings
    from shared.data.pools import build_pools
    from shared.model_zoo import load_base_model
    from shared.model_zoo.sharing import export_frozen_base, materialize_frozen_base
    from shared.precision import resolve_compute_dtype, resolve_device

    runtime_settings.cache_clear()
    checks: dict[str, bool] = {}
    report: dict = {"model": args.model, "torch": torch.__version__}
    device = resolve_device(args.device)  # raises with a clear message when torch sees no GPU
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(0)
    started = time.perf_counter()
    loaded = load_base_model(args.model)
    report["load_s"] = round(time.perf_counter() - started, 1)
    dtype = resolve_compute_dtype(runtime_settings().compute_dtype, device)
    params = list(loaded.model.parameters())
    checks["base_on_device"] = all(p.device.type == device.type for p in params)
    checks["base_in_compute_dtype"] = all(p.dtype == dtype for p in params)
    report["compute_dtype"] = str(dtype)
    rotary = [b for n, b in loaded.model.named_buffers() if n.endswith("inv_freq")]
    checks["rotary_float32"] = bool(rotary) and all(b.dtype == torch.float32 for b in rotary)

    rebuilt = materialize_frozen_base(export_frozen_base(loaded.model, loaded.fingerprint)).to(device)
    ids = torch.randint(0, 1000, (2, 16), device=device)
    with torch.inference_mode():
        same = torch.equal(rebuilt(ids).logits, loaded.model(ids).logits)
    checks["shared_base_reproduces_logits"] = bool(same)
    del rebuilt

    pools = build_pools(runtime_settings().data_dir)
    spec = build_population(pools.client, 1, 0.0, args.batch_size * args.steps)[0]
    training = LocalTrainingConfig(local_steps=args.steps, batch_size=args.batch_size, shadow_lr=5e-5)
    trainer = ClientTrainer(spec, loaded.model, loaded.tokenizer, LoraSettings(), training)
    lora = [p for p in trainer.model.parameters() if p.requires_grad]
    checks["lora_fp32_on_device"] = all(
        p.dtype == torch.float32 and p.device.type == device.type for p in lora
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    update = trainer.train_round(trainer.init_state, round_index=0, lr=1e-4)
    if device.type == "cuda":
        torch.cuda.synchronize()
    report["client_round_s"] = round(time.perf_counter() - started, 2)
    report["seconds_per_step"] = round(report["client_round_s"] / (2 * args.steps), 3)  # main + shadow
    checks["client_round_finite"] = all(np.all(np.isfinite(v)) for v in update.lora_state.values())
    checks["update_moved_b"] = bool(np.abs(update.b_snapshots[-1]).sum() > 0)
    if torch.cuda.is_available():
        report["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)

    bank = ProbeBank(args.probes)
    selector = ProbeSelector(
        base_model=loaded.name, lora_r=LoraSettings().r, base_fingerprint=loaded.fingerprint
    )
    fitting = [m for m in bank.manifests() if m.base_model.fingerprint == loaded.fingerprint]
    if fitting:
        manifest = bank.resolve(selector)
        features = adapter_features(manifest.feature_spec, update.lora_state, trainer.init_state)
        report["probe"] = {
            "probe_id": manifest.probe_id,
            "score": float(bank.score(manifest.probe_id, features[None])[0]),
        }
        checks["probe_fingerprint_matches"] = manifest.base_model.fingerprint == loaded.fingerprint
        checks["probe_score_in_range"] = 0.0 <= report["probe"]["score"] <= 1.0
    else:
        report["probe"] = f"no probe for {loaded.name!r} in {args.probes}: build one (docs/own_model.md)"
    report["checks"] = checks
    report["ok"] = all(checks.values())
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
