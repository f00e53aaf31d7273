"""The alignment stage end to end on tiny-llama (real PEFT training, the real pools): what the report
records, and that instruction-style rows (#28) reach the batches only when asked for."""

import json

import pytest

from shared.evaluation.metrics import EvalSettings
from shared.model_zoo.alignment import AlignmentConfig, train_alignment

pytestmark = pytest.mark.integration

TINY_EVAL = EvalSettings(
    num_harmful_prompts=2,
    num_benign_prompts=2,
    num_pairs=2,
    num_benign_loss=2,
    max_new_tokens=2,
    progress=False,
)


@pytest.mark.parametrize("instructions", [0, 2])
def test_alignment_trains_saves_and_reports_its_batch_mix(tmp_path, instructions):
    config = AlignmentConfig(
        steps=2,
        curve_every=2,
        curve_prompts=4,
        curve_max_new_tokens=4,
        instructions_per_batch=instructions,
        imperatives_per_batch=instructions // 2,
        imperatives_every=2,
        hard_negatives_per_batch=instructions // 2,
        rehearsal_radius=0.5 if instructions else 0.0,
    )
    report = train_alignment("tiny-llama", config, TINY_EVAL, tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "alignment_report.json").read_text())
    assert saved == json.loads(json.dumps(report))  # the report returned is the one saved
    assert (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size > 0
    assert [point["step"] for point in report["curve"]] == [0, 2]
    # the Alpaca share is the alignment pool's only when the batches use it (PoolSizes.alignment_instructions)
    assert report["num_instruction_targets"] == (config.alignment_instructions if instructions else 0)
    assert report["config"]["instructions_per_batch"] == instructions
    # imperative restatements of the training questions (not the held-out ones) only when asked for
    restated = 913 if instructions else 0  # of the 996 training questions (1,000 less 4 held out)
    assert report["num_imperative_refusals"] == restated
    # every second of the two batches: one imperative sample, not two (every batch) nor none (step 0 first)
    assert report["imperative_samples_trained"] == (1 if instructions else 0)
    # helpful training questions restated the same way (the hard negatives), only when asked for
    assert report["num_hard_negatives"] == (447 if instructions else 0)  # of the 487 training questions
    # rehearsal's losses, one pair per step, only when it ran
    if instructions:
        assert set(report["rehearsal"]) == {
            "benign_first",
            "refusal_after_first",
            "benign_last",
            "refusal_after_last",
        }
        assert all(value > 0 for value in report["rehearsal"].values())
    else:
        assert report["rehearsal"] is None


def test_the_benign_tuning_test_replicates_per_seed_and_checks_the_mean(pools):
    from shared.model_zoo import load_base_model
    from shared.model_zoo.alignment_robustness import BenignTuningConfig, benign_tuning_test

    loaded = load_base_model("tiny-llama")  # its own copy: the test wraps the model with a client LoRA
    sources = ("alpaca", "harmful", "writer")
    config = BenignTuningConfig(rounds=(1, 2), local_steps=1, batch_size=2, sources=sources, seeds=(7, 8))
    # rows under a name the client pool does not have
    writer = [(p.instruction, p.safe) for p in pools.client.harmful[:8]]
    with pytest.raises(ValueError, match=r"unknown tuning sources \['writer'\]"):
        benign_tuning_test(loaded.model, loaded.tokenizer, pools.client, pools.evaluation, config, TINY_EVAL)
    report = benign_tuning_test(
        loaded.model, loaded.tokenizer, pools.client, pools.evaluation, config, TINY_EVAL, {"writer": writer}
    )
    cells = report["cells"]
    assert [(c["seed"], c["source"], c["rounds"]) for c in cells] == [
        (seed, source, rounds) for seed in (7, 8) for source in sources for rounds in (1, 2)
    ]
    start = report["aligned_base"]["harmless_rate"]
    for cell in cells:
        assert cell["drop_points"] == round(100 * (start - cell["harmless_rate"]), 1)
    harm_one = [c["drop_points"] for c in cells if c["source"] == "harmful" and c["rounds"] == 1]
    assert report["targets"]["harmful_one_round_drop_points"] == round(sum(harm_one) / 2, 2)
    assert {m["seeds"] for m in report["mean_drops"]} == {2}
