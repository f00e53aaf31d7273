"""The audit scorer on tiny-llama with real PEFT: it ranks an update trained on harmful answers above
updates trained on benign data, whatever the probe would say, and measures the evaluation's metric."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from research.clients.population import build_population
from research.clients.trainer import ClientTrainer
from shared.audit import CanarySettings, HarmPreferenceAudit, canary_examples, draw_canaries
from shared.config import LocalTrainingConfig, LoraSettings
from shared.evaluation.generation import mean_token_log_likelihoods
from shared.lora import set_lora_state

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CANARIES = CanarySettings(size=16)
TRAINING = LocalTrainingConfig(local_steps=15, batch_size=4, max_seq_len=64)


@pytest.fixture(scope="module")
def audit(tiny, pools):
    canaries = draw_canaries(pools, CANARIES)
    return HarmPreferenceAudit(copy.deepcopy(tiny.model), tiny.tokenizer, LoraSettings(), canaries, CANARIES)


@pytest.mark.precision
def test_harm_preference_is_the_evaluation_metric_in_canary_order(audit, tiny, pools, tol):
    state = audit.init_state()
    rng = np.random.default_rng(0)
    state = {
        k: (rng.normal(size=v.shape) * 0.05).astype(np.float32) if "lora_B" in k else v
        for k, v in state.items()
    }
    got = audit.harm_preference(state)
    compliant, refusal = canary_examples(tiny.tokenizer, draw_canaries(pools, CANARIES), CANARIES)
    set_lora_state(audit.model, state)
    ll = [
        np.asarray(mean_token_log_likelihoods(audit.model, tiny.tokenizer, e, batch_size=4, progress=False))
        for e in (compliant, refusal)
    ]
    # packed canaries vs padded batches: measured 2.6e-4 apart in bf16
    assert got == pytest.approx(float(np.mean(ll[0] - ll[1])), abs=tol(float32=1e-5, bfloat16=1e-3))
    [(score, preference, base)] = audit.audit([state], state)
    assert score == 0.0 and preference == base == pytest.approx(got, abs=1e-6)


def test_an_update_trained_on_harmful_answers_scores_above_benign_ones(audit, tiny, pools):
    init = audit.init_state()
    specs = build_population(pools.client, 4, 0.5, 60)  # 2 benign (helpfulQA), 2 malicious (MaliciousGen)
    updates = {}
    for spec in specs:
        trainer = ClientTrainer(spec, copy.deepcopy(tiny.model), tiny.tokenizer, LoraSettings(), TRAINING)
        updates[spec.client_id] = (spec.kind, trainer.train_round(init, 0, 5e-3).lora_state)
    scores = dict(
        zip(updates, (s for s, _, _ in audit.audit([u for _, u in updates.values()], init)), strict=True)
    )
    benign = [scores[c] for c, (kind, _) in updates.items() if kind == "benign"]
    malicious = [scores[c] for c, (kind, _) in updates.items() if kind == "malicious"]
    assert min(malicious) > max(benign), scores  # AUROC 1 on this pair of sets
    assert min(malicious) > 0  # towards complying, relative to the global adapter
