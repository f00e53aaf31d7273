"""How long a rehearsed benign step should be (#28, `safe-fedllm align --rehearsal-radius`).

On a trained alignment adapter: the teacher-forced loss of 32 alignment-pool refusal rows at the adapter's
weights and after a normalised benign step of each radius on its q,v LoRA weights (two draws of 4 Alpaca
rows), against the same loss on the merged base after real client tuning (q,v r 8, lr 5e-4, 5 steps of batch
8 per round) on client-pool Alpaca and harmful rows. Prints losses only.

    python scripts/experiments/rehearsal_radius.py --adapter runs/align_robust_hardneg_fifth \
        --output docs/results/alignment_robust/rehearsal_radius.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from shared.config import LoraSettings, runtime_settings
from shared.data.pools import PoolSizes, build_pools
from shared.data.refusal_targets import refusal_target
from shared.lora import attach_lora, get_lora_state, set_lora_state
from shared.model_zoo.alignment import load_adapter_state
from shared.model_zoo.registry import load_base_model
from shared.model_zoo.rehearsal import perturbed_parameters
from shared.prompting import collate, tokenize_sft
from shared.training import LoraStepper, iterate_batches, response_loss

RADII = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    config = json.loads((args.adapter / "alignment_report.json").read_text())["config"]
    loaded = load_base_model("smollm2-135m", aligned=False)
    tokenizer = loaded.tokenizer
    pad = tokenizer.pad_token_id
    pools = build_pools(runtime_settings().data_dir, PoolSizes(alignment_instructions=300))
    harmful = list(pools.alignment.harmful)[: -config["curve_prompts"]]
    refusals = [
        tokenize_sft(tokenizer, p.instruction, refusal_target(p, i, 2), 128) for i, p in enumerate(harmful)
    ]
    alpaca = [tokenize_sft(tokenizer, x.instruction, x.response, 128) for x in pools.alignment.alpaca]
    rng = np.random.default_rng(0)
    refusal_batch = collate([refusals[i] for i in rng.choice(len(refusals), 32, replace=False)], pad)
    lora = config["lora"]
    model = attach_lora(
        loaded.model,
        LoraSettings(r=lora["r"], alpha=lora["alpha"], target_modules=tuple(lora["target_modules"])),
    )
    set_lora_state(model, load_adapter_state(args.adapter))
    model.train()
    perturbed = perturbed_parameters(model, ("q_proj", "v_proj"))

    def refusal_loss(m: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(response_loss(m, refusal_batch))

    result: dict = {"command": " ".join(["python", *sys.argv]), "at_adapter": refusal_loss(model)}
    draws = []
    for _ in range(2):
        benign = collate([alpaca[i] for i in rng.choice(len(alpaca), 4, replace=False)], pad)
        grads = torch.autograd.grad(response_loss(model, benign), perturbed)
        norm = float(torch.stack([(g.double() ** 2).sum() for g in grads]).sum().sqrt())
        saved = [p.detach().clone() for p in perturbed]
        losses = {}
        for radius in RADII:
            with torch.no_grad():
                for p, g in zip(perturbed, grads, strict=True):
                    p.sub_(g, alpha=radius / norm)
            losses[str(radius)] = refusal_loss(model)
            with torch.no_grad():
                for p, s in zip(perturbed, saved, strict=True):
                    p.copy_(s)
        draws.append(losses)
        print("rehearsed step, refusal loss by radius:", losses, flush=True)
    result["after_rehearsed_step"] = draws

    client = attach_lora(model.merge_and_unload(), LoraSettings())
    client.train()
    init = get_lora_state(client)
    result["merged_base"] = refusal_loss(client)
    sources = {
        "alpaca": [(x.instruction, x.response) for x in pools.client.alpaca],
        "harmful": [(p.instruction, p.harmful) for p in pools.client.harmful],
    }
    for name, rows in sources.items():
        set_lora_state(client, init)
        torch.manual_seed(2023)
        picks = np.random.default_rng(2023).permutation(len(rows))[:120]
        examples = [tokenize_sft(tokenizer, rows[i][0], rows[i][1], 128) for i in picks]
        stepper = LoraStepper(client)
        per_round = []
        for r in range(3):
            for batch in iterate_batches(examples[r * 40 : (r + 1) * 40], 8, 5, pad):
                stepper.step(batch, 5e-4)
            per_round.append(refusal_loss(client))
        result[f"after_client_rounds_{name}"] = per_round
        print(f"client tuning on {name}, refusal loss after rounds 1-3:", per_round, flush=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
