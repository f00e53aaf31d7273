"""Early steps as non-evidence (min_step), and what a probe's manifest sets in the defense and the task."""

import logging

import numpy as np
import pytest

from probes.artifact import export_linear_probe, load_artifact
from services.aggregator.defenses import DefenseSettings, ProbeEvidence, ShadowLevel, StepLevel
from services.aggregator.probe_binding import bind_probe
from shared.config import LocalTrainingConfig, LoraSettings
from shared.features import FeatureSpec

FLAGGED, CLEAN = 0.95, 0.1


def test_min_step_ignores_early_steps_and_reweights_the_rest():
    # T = 5, b = 8, n = 40; steps 1-2 flagged (noise), 3-5 clean: method counts rho = 16/40 -> (0.6)^7
    evidence = ProbeEvidence("c", 40, 8, shadow_scores=[FLAGGED, FLAGGED, CLEAN, CLEAN, CLEAN])
    assert ShadowLevel(DefenseSettings()).decide_client(0, evidence, {}).factor == pytest.approx(0.6**7)
    assert ShadowLevel(DefenseSettings(min_step=3)).decide_client(0, evidence, {}).factor == 1.0
    # later steps flagged: each of 3 scored steps stands for 40/3 samples -> rho = 2 * 40/3 / 40 = 2/3
    late = ProbeEvidence("c", 40, 8, shadow_scores=[CLEAN, CLEAN, FLAGGED, FLAGGED, CLEAN])
    factor = ShadowLevel(DefenseSettings(min_step=3)).decide_client(0, late, {}).factor
    assert factor == pytest.approx((1 - 2 / 3) ** 7)
    # all scored steps flagged drives rho to exactly 1 (the method's maximum), not 3/5
    all_late = ProbeEvidence("c", 40, 8, shadow_scores=[CLEAN, CLEAN, FLAGGED, FLAGGED, FLAGGED])
    assert ShadowLevel(DefenseSettings(min_step=3)).decide_client(0, all_late, {}).factor == 0.0


def test_min_step_beyond_the_trajectory_scores_the_last_step():
    evidence = ProbeEvidence("c", 16, 8, step_scores=[CLEAN, FLAGGED])
    decision = StepLevel(DefenseSettings(min_step=5)).decide_client(0, evidence, {})
    # the last step stands for all 16 samples: alpha = 0.95 * 1 + 0, beta = 0.95 * 1 + 16
    assert decision.trust == pytest.approx({"alpha": 0.95, "beta": 0.95 + 16})
    assert decision.reason.startswith("1/1 scored steps flagged")


@pytest.fixture
def manifest(tmp_path):
    spec = FeatureSpec.for_adapter(
        {"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": np.zeros((4, 2), np.float32)},
        "first_B",
    )
    export_linear_probe(
        tmp_path / "p", "p", np.ones(spec.dim, np.float32), 0.0, spec, base_model="m", fingerprint="f" * 16,
        lora=LoraSettings(r=2, target_modules=("q_proj",)), threshold=0.37, min_step=3,
        training_data_hash="0" * 16, training={"dataset": {"lr": 2e-4, "batch_size": 8, "steps": 5}},
    )  # fmt: skip
    return load_artifact(tmp_path / "p").manifest


def test_manifest_fills_threshold_min_step_and_shadow_lr(manifest):
    defense, training = bind_probe(manifest, DefenseSettings(), LocalTrainingConfig(batch_size=8), True)
    assert (defense.threshold, defense.min_step) == (0.37, 3)
    assert training.shadow_lr == 2e-4
    # other settings untouched
    assert defense.shadow_exponent == DefenseSettings().shadow_exponent


def test_explicit_settings_win_and_no_shadow_lr_without_a_shadow_level(manifest):
    explicit = DefenseSettings(threshold=0.8, min_step=1)
    defense, training = bind_probe(manifest, explicit, LocalTrainingConfig(shadow_lr=5e-5), True)
    assert (defense.threshold, defense.min_step, training.shadow_lr) == (0.8, 1, 5e-5)
    _, training = bind_probe(manifest, DefenseSettings(), LocalTrainingConfig(), False)
    assert training.shadow_lr is None


def test_client_settings_unlike_the_probes_are_logged(manifest, caplog):
    with caplog.at_level(logging.WARNING):
        bind_probe(manifest, DefenseSettings(), LocalTrainingConfig(batch_size=4, local_steps=5), True)
    assert "trained at {'batch': 8}" in caplog.text
