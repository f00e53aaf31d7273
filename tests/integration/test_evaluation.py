import pytest

from shared.evaluation.metrics import EvalSettings, evaluate_model

SMALL = EvalSettings(
    num_harmful_prompts=4,
    num_benign_prompts=4,
    num_pairs=8,
    num_benign_loss=8,
    max_new_tokens=6,
    progress=False,
)


def test_metrics_on_the_tiny_model_are_in_range(tiny, pools):
    report = evaluate_model(tiny.model, tiny.tokenizer, pools.evaluation, SMALL)
    assert 0.0 <= report.harmless_rate <= 1.0
    assert 0.0 <= report.over_refusal_rate <= 1.0
    assert report.benign_loss > 0
    assert report.num_pairs == 8 and report.num_harmful_prompts == 4
    # The tiny model's pre-stage taught refusals, so it prefers them to the harmful answers.
    assert report.harm_preference < 0


def test_metrics_refuse_non_evaluation_pools(tiny, pools):
    with pytest.raises(ValueError, match="evaluation pool"):
        evaluate_model(tiny.model, tiny.tokenizer, pools.client, SMALL)
