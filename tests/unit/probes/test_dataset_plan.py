"""The probe build's plan: a sample-level split first, overlapping training trajectories, unseen settings."""

import numpy as np
import pytest

from probes.dataset import ClientSetting, ProbeDatasetConfig, trajectory_plan
from probes.sources import ProbeSource


def _source(name: str, label: int, rows: int) -> ProbeSource:
    return ProbeSource(name, label, tuple((f"{name} q{i}", f"{name} a{i}") for i in range(rows)))


SOURCES = {
    "maliciousgen": _source("maliciousgen", 1, 60),
    "selfgen_harmful": _source("selfgen_harmful", 1, 40),
    "helpful": _source("helpful", 0, 60),
    "dolly": _source("dolly", 0, 20),
}
CONFIG = ProbeDatasetConfig(
    train_trajectories={"maliciousgen": 12, "selfgen_harmful": 6, "helpful": 15},
    test_trajectories={"maliciousgen": 2, "selfgen_harmful": 2, "helpful": 2, "dolly": 2},
    client_settings=(
        ClientSetting(name="lr_x2", lr_scale=2.0),
        ClientSetting(name="b2", batch_size=2, steps=4),
    ),
    client_setting_trajectories=2,
    steps=2,
    batch_size=4,
    lr=1e-3,
)


def test_test_trajectories_hold_only_samples_no_training_trajectory_saw():
    plan = trajectory_plan(CONFIG, SOURCES)
    for name in SOURCES:
        train = {s for t in plan if t.source == name and t.role == "train" for s in t.samples}
        tests = [set(t.samples) for t in plan if t.source == name and t.role != "train"]
        assert all(not (test & train) for test in tests)
        builder_tests = [set(t.samples) for t in plan if t.source == name and t.role == "test"]
        # held-out trajectories of one source are disjoint from each other too
        assert sum(map(len, builder_tests)) == len(set().union(*builder_tests)) if builder_tests else True


def test_counts_overlap_and_settings():
    plan = trajectory_plan(CONFIG, SOURCES)
    roles = [(t.source, t.role) for t in plan]
    assert roles.count(("maliciousgen", "train")) == 12 and roles.count(("dolly", "test")) == 2
    assert not any(t.source == "dolly" and t.role == "train" for t in plan)
    # 15 helpful training trajectories x 8 samples exceed the 52 training rows: they must overlap
    helpful = [s for t in plan if t.source == "helpful" and t.role == "train" for s in t.samples]
    assert len(helpful) == 120 and len(set(helpful)) <= 52
    settings = [t for t in plan if t.role == "client_settings"]
    assert len(settings) == 2 * 2 * 2  # settings x classes x trajectories
    assert {(t.setting, t.lr, t.batch_size, t.steps) for t in settings} == {
        ("lr_x2", 2e-3, 4, 2),
        ("b2", 1e-3, 2, 4),
    }
    assert {t.label for t in settings if t.setting == "b2"} == {0, 1}
    assert all(len(t.samples) == t.batch_size * t.steps for t in plan)


def test_plan_is_seeded_and_refuses_too_few_rows():
    first, second = trajectory_plan(CONFIG, SOURCES), trajectory_plan(CONFIG, SOURCES)
    assert [t.samples for t in first] == [t.samples for t in second]
    other = trajectory_plan(CONFIG.model_copy(update={"seed": 7}), SOURCES)
    assert [t.samples for t in other] != [t.samples for t in first]
    with pytest.raises(ValueError, match="dolly: 20 rows cannot hold 3 disjoint test trajectories"):
        trajectory_plan(CONFIG.model_copy(update={"test_trajectories": {"dolly": 3}}), SOURCES)
    with pytest.raises(ValueError, match="unknown probe sources"):
        trajectory_plan(CONFIG.model_copy(update={"train_trajectories": {"nope": 1}}), SOURCES)


def test_plan_interleaves_classes():
    labels = np.asarray([t.label for t in trajectory_plan(CONFIG, SOURCES)])
    first_half = labels[: len(labels) // 2]
    assert 0.25 < first_half.mean() < 0.75
