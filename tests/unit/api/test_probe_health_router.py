"""services/probe_service/api/routes/health.py in process: liveness, readiness, metrics."""

from fastapi.testclient import TestClient

from services.probe_service.api.app import create_app
from services.probe_service.backends import InProcessBackend
from services.probe_service.scoring import ProbeBank


def test_ready_with_a_probe_and_metrics_count_requests(probe_app):
    assert probe_app.client.get("/healthz").json() == {"status": "ok"}
    ready = probe_app.client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {
        "status": "ready",
        "probes": ["toy-probe"],
        "scorer": True,
    }
    probe_app.client.post("/v1/score", json={"probe_id": "toy-probe", "snapshots": [[1.0] * 18]})
    metrics = probe_app.client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert "toy-probe" in metrics.text


def test_not_ready_without_a_probe(tmp_path):
    bank = ProbeBank(tmp_path)  # an empty registry
    with TestClient(create_app(bank, InProcessBackend(bank))) as client:
        answer = client.get("/readyz")
        assert answer.status_code == 503 and answer.json()["status"] == "unavailable"
        assert client.get("/healthz").status_code == 200
