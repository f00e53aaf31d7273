"""services/probe_service/api/routes/score.py in process: one update, a batch, and refused bodies."""

import numpy as np
import pytest
from safetensors.numpy import save


def _p(weight: np.ndarray, row: np.ndarray) -> float:
    """The planted probe by hand: sigmoid(w · x / |x|), bias 0 (features are L2-normalised)."""
    return float(1 / (1 + np.exp(-(weight.astype(np.float64) @ (row / np.linalg.norm(row))))))


def test_score_one_snapshot_as_json(probe_app):
    row = probe_app.weight.astype(np.float64)  # along +w: p = sigmoid(|w|) ≈ 0.92 >= 0.8
    answer = probe_app.client.post("/v1/score", json={"probe_id": "toy-probe", "snapshots": [row.tolist()]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["probability"] == pytest.approx(_p(probe_app.weight, row), abs=1e-6)
    assert body["verdict"] == "malicious" and body["threshold"] == 0.8 and body["probe_id"] == "toy-probe"


def test_score_batch_of_safetensors_snapshots_counts_the_flagged(probe_app):
    rows = np.stack([probe_app.weight, -probe_app.weight, np.ones_like(probe_app.weight)])
    answer = probe_app.client.post(
        "/v1/score/batch?probe_id=toy-probe",
        content=save({"snapshots": rows.astype(np.float32)}),
        headers={"content-type": "application/octet-stream"},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected = [_p(probe_app.weight, r.astype(np.float64)) for r in rows]
    assert [r["probability"] for r in body["results"]] == pytest.approx(expected, abs=1e-6)
    assert [r["verdict"] for r in body["results"]] == ["malicious", "benign", "benign"]  # ones: p = 0.5
    assert body["flagged"] == 1


def test_refused_bodies_get_a_reason_and_the_api_error_shape(probe_app):
    wrong_type = probe_app.client.post("/v1/score", content=b"x", headers={"content-type": "text/plain"})
    assert wrong_type.status_code == 415 and wrong_type.json()["error"] == "unsupported_media_type"
    short = probe_app.client.post("/v1/score", json={"probe_id": "toy-probe", "snapshots": [[0.1, 0.2]]})
    assert short.status_code == 422 and "18" in short.json()["detail"]  # the probe reads 18 features
    two = probe_app.client.post("/v1/score", json={"probe_id": "toy-probe", "snapshots": [[1.0] * 18] * 2})
    assert two.status_code == 422 and "/v1/score/batch" in two.json()["detail"]
    unknown = probe_app.client.post("/v1/score", json={"probe_id": "nope", "snapshots": [[1.0] * 18]})
    assert unknown.status_code == 404
