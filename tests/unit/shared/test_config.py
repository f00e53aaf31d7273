import itertools

import pytest
from pydantic import ValidationError

from shared.config import LocalTrainingConfig, LrSchedule, RuntimeSettings


def test_cosine_schedule_endpoints_and_monotonicity():
    schedule = LrSchedule(lr_max=5e-5, lr_min=1e-6)
    lrs = [schedule.at_round(r, 10) for r in range(11)]
    assert lrs[0] == pytest.approx(5e-5)
    assert lrs[10] == pytest.approx(1e-6)
    assert lrs[5] == pytest.approx(1e-6 + 0.5 * (5e-5 - 1e-6))
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def test_invalid_settings_are_rejected():
    with pytest.raises(ValidationError):
        LrSchedule(lr_max=1e-6, lr_min=1e-5)
    with pytest.raises(ValidationError):
        LocalTrainingConfig(local_steps=0)
    with pytest.raises(ValidationError):
        LocalTrainingConfig(unknown=1)


def test_runtime_settings_read_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SAFE_FEDLLM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SAFE_FEDLLM_REDIS_URL", "redis://127.0.0.1:1/0")
    settings = RuntimeSettings()
    assert settings.cache_dir == tmp_path
    assert settings.redis_url == "redis://127.0.0.1:1/0"
