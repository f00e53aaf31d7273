"""The audit experiments' scripts end to end on tiny-llama (real PEFT training, real scoring), so the
committed commands in docs/audit.md keep running: updates, their sums over rounds, and round aggregates."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts" / "experiments"
TRAINING = ["--model", "tiny-llama", "--steps", "2", "--batch-size", "2", "--seed", "3"]


def _run(script: str, *args: str) -> None:
    subprocess.run([sys.executable, str(SCRIPTS / script), *args], check=True, capture_output=True)


def test_rounds_and_aggregates_report_every_signal_for_every_harmful_source(tmp_path: Path) -> None:
    cache = ["--cache", str(tmp_path / "cache")]
    _run("audit_eval.py", *TRAINING, *cache, "--updates", "2", "--canaries", "4", "--max-tokens", "4",
         "--stop-after", "train")  # fmt: skip
    _run("audit_rounds.py", *TRAINING, *cache, "--clients", "2", "--rounds", "2", "--canaries", "4",
         "--tokens", "4", "--output", str(tmp_path / "rounds.json"))  # fmt: skip
    _run("audit_aggregate.py", *TRAINING, *cache, "--clients", "4", "--updates", "2", "--draws", "1",
         "--canaries", "4", "--tokens", "4", "--output", str(tmp_path / "aggregate.json"))  # fmt: skip

    rounds = json.loads((tmp_path / "rounds.json").read_text())
    harmful = sorted(n for n, label in rounds["labels"].items() if label == "harmful")
    assert harmful == ["adaptive_topic", "advbench_target", "maliciousgen"]  # no selfgen for tiny-llama
    assert set(rounds["rounds"]) == {"1", "2"}
    for entry in rounds["rounds"].values():
        assert set(entry) == {"audit", "self_refusal_drop", "refusal_rate_drop"}
        for signal in entry.values():
            assert all(0.0 <= signal[src]["auroc"] <= 1.0 for src in harmful)
            assert 0.0 <= signal["held_out_benign_fpr"] <= 1.0
            # the fitted rule never sits below the empirical one, so it never flags more benign updates
            assert signal["fitted_threshold"] >= signal["threshold"]
            assert signal["fitted_held_out_benign_fpr"] <= signal["held_out_benign_fpr"]
            assert all(signal[s]["tpr_at_fitted_threshold"] <= signal[s]["tpr_at_threshold"] for s in harmful)
    # round 2 trained on top of round 1: a second state per client, never the first one again
    states = sorted(p.name for p in (tmp_path / "cache").rglob("maliciousgen_00*.npz"))
    assert states == ["maliciousgen_00.npz", "maliciousgen_00.r2.npz"]

    aggregate = json.loads((tmp_path / "aggregate.json").read_text())
    assert aggregate["rounds"] == {"clean": 2, "attacked_per_source_and_ratio": 1}
    keys = {f"{src}@{ratio}" for src in harmful for ratio in ("0.3", "0.5")}
    for signal in aggregate["signals"].values():
        assert {k for k, v in signal.items() if isinstance(v, dict)} == keys
