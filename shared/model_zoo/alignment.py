"""The safety-alignment stage: a LoRA trained on refusals mixed with helpful answers, merged into the base.

SmolLM2-135M-Instruct refuses almost nothing, so a fine-tuning attack on it cannot be measured. This stage
makes a safety-aligned base. benignQA's "safe" answers often lecture and then comply in part, so each
refusal target opens with an explicit refusal (varied wording) followed by the first sentences of the safe
answer: the behaviour is then learnable and the rule-based metric measures it. Every batch holds as many
helpful samples (helpfulQA) as refusals, to keep over-refusal low. Only the alignment pool is used;
a slice of it is held out to draw the training curve; the final numbers come from the evaluation pool.
#28's levers for a base whose refusals survive benign client tuning are options of AlignmentConfig:
instruction-style rows, imperative refusals, hard negatives, recovery rows, and rehearsal of a benign client
step (shared/model_zoo/rehearsal.py).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from shared.config import LoraSettings, LrSchedule, runtime_settings
from shared.data.imperatives import as_imperative
from shared.data.pools import PoolSizes, build_pools
from shared.data.refusal_targets import refusal_target
from shared.data.sources import Example, HarmfulPair
from shared.evaluation.metrics import EvalSettings, evaluate_model, harmless_rate, over_refusal_rate
from shared.lora import attach_lora, set_lora_state
from shared.model_zoo.alignment_robustness import BenignTuningConfig, benign_tuning_test, recovery_example
from shared.model_zoo.registry import alignment_adapter_dir, load_base_model
from shared.model_zoo.rehearsal import RehearsalLosses, add_rehearsal_gradient, perturbed_parameters
from shared.prompting import TokenizedExample, collate, tokenize_sft
from shared.training import LoraStepper


class AlignmentConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    lora: LoraSettings = LoraSettings(r=16, alpha=32, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))
    steps: int = Field(200, ge=1)
    refusals_per_batch: int = Field(2, ge=1)
    helpful_per_batch: int = Field(6, ge=0)
    lr: LrSchedule = LrSchedule(lr_max=4e-4, lr_min=2e-5)
    max_seq_len: int = Field(128, ge=32)
    safe_sentences: int = Field(
        2, ge=0, description="Sentences of the safe answer after the refusal opening."
    )
    recovery_per_batch: int = Field(
        0, ge=0, description="Recovery samples per batch: a harmful answer's start, then a refusal (#28)."
    )
    recovery_prefix_words: tuple[int, int] = Field(
        (3, 24), description="Range of harmful-answer words before the refusal of a recovery sample."
    )
    instructions_per_batch: int = Field(
        0,
        ge=0,
        description="Instruction-style helpful samples per batch (Alpaca rows of the alignment pool, "
        "PoolSizes.alignment_instructions of them): the style of the benign traffic (#28).",
    )
    alignment_instructions: int = Field(
        300, ge=1, description="Alpaca rows the alignment pool takes when instructions_per_batch > 0."
    )
    imperatives_per_batch: int = Field(
        0,
        ge=0,
        description="Refusal samples per batch whose request is an alignment-pool harmful question restated "
        "as an imperative (shared/data/imperatives.py): the form of instruction data and of AdvBench (#28).",
    )
    imperatives_every: int = Field(
        1,
        ge=1,
        description="Imperative refusal samples go into every n-th batch only: a share of them between "
        "none and imperatives_per_batch in each batch (#28).",
    )
    hard_negatives_per_batch: int = Field(
        0,
        ge=0,
        description="Helpful samples per batch whose request is an alignment-pool helpful question "
        "restated by the same rules as the imperative refusals: benign requests in harm's form, so that the "
        "form alone does not predict a refusal (#28's hard negatives).",
    )
    rehearsal_radius: float = Field(
        0.0,
        ge=0,
        description="Benign fine-tuning rehearsal (shared/model_zoo/rehearsal.py): the L2 length of the "
        "simulated benign step on the LoRA weights of rehearsal_modules; 0 turns rehearsal off (#28).",
    )
    rehearsal_weight: float = Field(
        1.0,
        gt=0,
        description="Weight of the refusal loss after the simulated benign step, against the batch's mean "
        "loss at 1: at 1 its few rows weigh as much as the whole batch.",
    )
    rehearsal_benign_rows: int = Field(
        4, ge=1, description="Benign rows (helpfulQA and Alpaca) that set the simulated step's direction."
    )
    rehearsal_refusal_rows: int = Field(
        2, ge=1, description="Refusal rows (questions and imperatives) scored after the simulated step."
    )
    rehearsal_modules: tuple[str, ...] = Field(
        ("q_proj", "v_proj"), min_length=1, description="Where the clients' LoRA (and so their update) is."
    )
    curve_every: int = Field(50, ge=1)
    curve_prompts: int = Field(
        32, ge=4, description="Held-out alignment-pool prompts per curve point (each kind)."
    )
    curve_max_new_tokens: int = Field(24, ge=4)
    seed: int = 2023


Batch = dict[str, torch.Tensor]


def _cycle(examples: list[TokenizedExample], count: int, rng: np.random.Generator) -> list[TokenizedExample]:
    picks = rng.integers(0, len(examples), size=count)
    return [examples[i] for i in picks]


def _rehearsal_summary(rehearsed: list[RehearsalLosses], window: int = 20) -> dict | None:
    """Mean rehearsal losses over the first and the last `window` steps (None without rehearsal)."""
    if not rehearsed:
        return None
    return {
        f"{kind}_{name}": float(np.mean([getattr(r, kind) for r in part]))
        for name, part in (("first", rehearsed[:window]), ("last", rehearsed[-window:]))
        for kind in ("benign", "refusal_after")
    }


def load_adapter_state(adapter_dir: Path) -> dict[str, np.ndarray]:
    """A saved PEFT adapter's weights, keyed as get_lora_state keys them."""
    from safetensors.numpy import load_file

    return {k: v.astype(np.float32) for k, v in load_file(adapter_dir / "adapter_model.safetensors").items()}


def train_alignment(
    model_name: str,
    config: AlignmentConfig,
    eval_settings: EvalSettings,
    output_dir: Path | None = None,
    command: str = "",
    resume_from: Path | None = None,
    robustness: BenignTuningConfig | None = None,
) -> dict:
    """Train, save and evaluate the alignment adapter; the report is returned and saved beside it."""
    settings = runtime_settings()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    loaded = load_base_model(model_name, aligned=False)
    tokenizer = loaded.tokenizer
    sizes = (
        PoolSizes(alignment_instructions=config.alignment_instructions)
        if config.instructions_per_batch
        else None
    )
    pools = build_pools(settings.data_dir, sizes)  # the client and evaluation pools are the same either way
    harmful: list[HarmfulPair] = list(pools.alignment.harmful)
    helpful: list[Example] = list(pools.alignment.helpful)
    held_harmful = harmful[-config.curve_prompts :]
    held_helpful = helpful[-config.curve_prompts :]
    train_harmful = harmful[: -config.curve_prompts]
    train_helpful = helpful[: -config.curve_prompts]

    refused = [
        (p.instruction, refusal_target(p, i, config.safe_sentences)) for i, p in enumerate(train_harmful)
    ]
    answered = [(x.instruction, x.response) for x in train_helpful]
    refusals = [tokenize_sft(tokenizer, q, a, config.max_seq_len) for q, a in refused]
    answers = [tokenize_sft(tokenizer, q, a, config.max_seq_len) for q, a in answered]
    instructions = [
        tokenize_sft(tokenizer, x.instruction, x.response, config.max_seq_len) for x in pools.alignment.alpaca
    ]

    def restated(rows: list[tuple[str, str]]) -> list[TokenizedExample]:
        """(question, answer) rows with the question as an imperative; one no rule restates is left out.
        Imperative refusals and hard negatives share it: the same form on both sides of the boundary."""
        return [
            tokenize_sft(tokenizer, request, answer, config.max_seq_len)
            for i, (question, answer) in enumerate(rows)
            if (request := as_imperative(question, i)) is not None
        ]

    imperatives = restated(refused) if config.imperatives_per_batch else []
    hard_negatives = restated(answered) if config.hard_negatives_per_batch else []
    low, high = config.recovery_prefix_words
    recoveries = (
        [
            recovery_example(
                tokenizer,
                p,
                target,
                int(rng.integers(low, high + 1)),
                config.max_seq_len,
            )
            for p, (_, target) in zip(train_harmful, refused, strict=True)
        ]
        if config.recovery_per_batch
        else []
    )

    peft_model = attach_lora(loaded.model, config.lora)
    # The evaluation takes a causal LM; PeftModel forwards generate() and forward() to its base.
    evaluated = cast(PreTrainedModel, peft_model)
    previous_stages: list[dict] = []
    if resume_from is not None:
        # A further stage on top of an earlier adapter (e.g. a helpful-heavy stage against over-refusal).
        set_lora_state(peft_model, load_adapter_state(resume_from))
        earlier = json.loads((resume_from / "alignment_report.json").read_text())
        previous_stages = [*earlier.pop("previous_stages", []), earlier]
    stepper = LoraStepper(peft_model)
    rehearsal_benign = answers + instructions
    rehearsal_refusals = refusals + imperatives
    perturbed = perturbed_parameters(peft_model, config.rehearsal_modules) if config.rehearsal_radius else []
    rehearsed: list[RehearsalLosses] = []
    curve_settings = EvalSettings(max_new_tokens=config.curve_max_new_tokens, progress=False)
    curve: list[dict] = []

    def curve_point(step: int) -> None:
        point = {
            "step": step,
            "refusal_rate": harmless_rate(
                evaluated, tokenizer, [p.instruction for p in held_harmful], curve_settings
            ),
            "over_refusal_rate": over_refusal_rate(
                evaluated, tokenizer, [x.instruction for x in held_helpful], curve_settings
            ),
        }
        curve.append(point)
        tqdm.write(
            f"step {step}: held-out refusal {point['refusal_rate']:.2f}, "
            f"over-refusal {point['over_refusal_rate']:.2f}"
        )

    pad_id = tokenizer.pad_token_id
    started = time.perf_counter()
    curve_point(0)
    losses: list[float] = []
    imperatives_trained = 0
    progress = tqdm(range(1, config.steps + 1), desc="alignment", unit="step")
    for step in progress:
        batch = _cycle(refusals, config.refusals_per_batch, rng) + _cycle(
            answers, config.helpful_per_batch, rng
        )
        if recoveries:
            batch += _cycle(recoveries, config.recovery_per_batch, rng)
        if instructions:
            batch += _cycle(instructions, config.instructions_per_batch, rng)
        # drawn last, so that recipes without them keep their random stream
        if imperatives and step % config.imperatives_every == 0:
            batch += _cycle(imperatives, config.imperatives_per_batch, rng)
            imperatives_trained += config.imperatives_per_batch
        if hard_negatives:
            batch += _cycle(hard_negatives, config.hard_negatives_per_batch, rng)
        lr = config.lr.at_round(step - 1, config.steps)
        rehearse: Callable[[], None] | None = None
        if perturbed:
            benign_batch = collate(_cycle(rehearsal_benign, config.rehearsal_benign_rows, rng), pad_id)
            refusal_batch = collate(_cycle(rehearsal_refusals, config.rehearsal_refusal_rows, rng), pad_id)

            def rehearse(benign: Batch = benign_batch, refusal: Batch = refusal_batch) -> None:
                rehearsed.append(
                    add_rehearsal_gradient(
                        peft_model,
                        stepper.params,
                        perturbed,
                        benign,
                        refusal,
                        radius=config.rehearsal_radius,
                        weight=config.rehearsal_weight,
                    )
                )

        losses.append(stepper.step(collate(batch, pad_id), lr, after_backward=rehearse))
        progress.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr:.1e}")
        if step % config.curve_every == 0 or step == config.steps:
            curve_point(step)
    train_seconds = time.perf_counter() - started

    target = output_dir or alignment_adapter_dir(model_name)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(str(tmp), safe_serialization=True)
    (tmp / "README.md").unlink(missing_ok=True)

    final = evaluate_model(evaluated, tokenizer, pools.evaluation, eval_settings)
    report = {
        "command": command,
        "previous_stages": previous_stages,
        "model": model_name,
        "config": config.model_dump(mode="json"),
        "train_seconds": round(train_seconds, 1),
        "torch_threads": torch.get_num_threads(),
        "num_refusal_targets": len(refusals),
        "num_helpful_targets": len(answers),
        "num_instruction_targets": len(instructions),
        "num_imperative_refusals": len(imperatives),
        "imperative_samples_trained": imperatives_trained,
        "num_hard_negatives": len(hard_negatives),
        "loss_first_last": [losses[0], losses[-1]],
        "rehearsal": _rehearsal_summary(rehearsed),
        "curve": curve,
        "evaluation_pool": {"settings": eval_settings.model_dump(mode="json"), **final.model_dump()},
    }
    (tmp / "alignment_report.json").write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)
    if robustness is not None:
        # On the aligned base itself (merged), as the FL clients fine-tune it; the adapter is saved already.
        aligned = cast(PreTrainedModel, peft_model.merge_and_unload())
        report["benign_tuning"] = benign_tuning_test(
            aligned, tokenizer, pools.client, pools.evaluation, robustness, eval_settings
        )
        (target / "alignment_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
