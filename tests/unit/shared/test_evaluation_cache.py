"""An adapter is evaluated once per (base, settings); another adapter, base or setting is evaluated anew."""

import numpy as np

from shared.evaluation.cache import cached_evaluation
from shared.evaluation.metrics import EvalSettings, SafetyReport

STATE = {"layers.0.q.lora_B": np.zeros((2, 2), np.float32)}


def report(rate: float) -> SafetyReport:
    return SafetyReport(
        harmless_rate=rate,
        harmless_rate_ci95=(rate - 0.1, rate + 0.1),
        over_refusal_rate=0.25,
        harm_preference=0.01,
        harm_preference_ci95=(0.0, 0.02),
        benign_loss=1.1,
        num_harmful_prompts=100,
        num_benign_prompts=40,
        num_pairs=100,
        num_benign_loss=60,
    )


def test_evaluations_are_remembered_by_adapter_base_and_settings(tmp_path):
    calls: list[float] = []

    def evaluate(rate):
        def run():
            calls.append(rate)
            return report(rate)

        return run

    settings = EvalSettings(num_harmful_prompts=100)
    first = cached_evaluation(tmp_path, ("base-a", settings), STATE, evaluate(0.8))
    quiet = settings.model_copy(update={"progress": False})  # a progress bar changes no metric
    assert cached_evaluation(tmp_path, ("base-a", quiet), STATE, evaluate(0.1)) == first
    assert calls == [0.8]
    moved = {k: v + np.float32(1e-3) for k, v in STATE.items()}
    assert cached_evaluation(tmp_path, ("base-a", settings), moved, evaluate(0.5)).harmless_rate == 0.5
    assert cached_evaluation(tmp_path, ("base-b", settings), STATE, evaluate(0.6)).harmless_rate == 0.6
    fewer = settings.model_copy(update={"num_harmful_prompts": 50})
    assert cached_evaluation(tmp_path, ("base-a", fewer), STATE, evaluate(0.7)).harmless_rate == 0.7
    assert calls == [0.8, 0.5, 0.6, 0.7]


def test_a_truncated_entry_is_evaluated_again(tmp_path):
    settings = EvalSettings()
    cached_evaluation(tmp_path, ("base-a", settings), STATE, lambda: report(0.8))
    (entry,) = (tmp_path / "evaluations").glob("*.json")
    entry.write_text(entry.read_text()[:20])
    assert cached_evaluation(tmp_path, ("base-a", settings), STATE, lambda: report(0.3)).harmless_rate == 0.3
