"""services/aggregator/api/routes/admin.py in process: enrollments, rounds, trust, decision log, globals."""

import numpy as np

from shared.updates import decode_lora_state
from tests.unit.api.apps import ADMIN, submission


def test_enrollments_mint_bound_tokens_for_the_operator_only(aggregator):
    minted = aggregator.client.post(
        "/v1/admin/enrollments", headers=ADMIN, json={"count": 2, "client_id": "c1"}
    )
    assert minted.status_code == 201 and minted.json()["client_id"] == "c1"
    assert len(set(minted.json()["tokens"])) == 2
    wrong = {"authorization": "Bearer guess"}
    assert aggregator.client.post("/v1/admin/enrollments", headers=wrong, json={}).status_code == 403
    assert aggregator.client.post("/v1/admin/enrollments", json={}).status_code == 401
    too_many = aggregator.client.post("/v1/admin/enrollments", headers=ADMIN, json={"count": 1001})
    assert too_many.status_code == 422


def test_a_round_opens_collects_closes_and_commits_the_sample_weighted_mean(aggregator):
    alice, bob = aggregator.register("alice"), aggregator.register("bob")
    opened = aggregator.client.post("/v1/admin/rounds/0/open", headers=ADMIN)
    assert opened.status_code == 200 and opened.json()["phase"] == "open"
    assert sorted(opened.json()["sampled"]) == ["alice", "bob"]
    assert aggregator.client.post("/v1/admin/rounds/1/open", headers=ADMIN).status_code == 409  # 0 still open
    aggregator.client.post("/v1/rounds/0/updates", headers=alice, **submission(1.0, num_samples=20))
    aggregator.client.post("/v1/rounds/0/updates", headers=bob, **submission(4.0, num_samples=5))
    status = aggregator.client.get("/v1/admin/rounds/0", headers=ADMIN).json()
    assert sorted(u["client_id"] for u in status["updates"]) == ["alice", "bob"] and status["missing"] == []
    closed = aggregator.client.post("/v1/admin/rounds/0/close", headers=ADMIN)
    assert closed.status_code == 200 and closed.json()["phase"] == "aggregated"
    # FedAvg weights n_i: (20 · 1 + 5 · 4) / 25 = 1.6 in every B entry
    blob = aggregator.client.get("/v1/admin/global/1", headers=ADMIN)
    b_values = [v for k, v in decode_lora_state(blob.content).items() if "lora_B" in k]
    np.testing.assert_allclose(np.concatenate([v.ravel() for v in b_values]), 1.6, rtol=1e-6)
    assert aggregator.client.post("/v1/admin/rounds/0/close", headers=ADMIN).status_code == 409


def test_round_status_trust_and_audit_log(aggregator):
    assert aggregator.client.get("/v1/admin/rounds/9", headers=ADMIN).status_code == 404
    assert aggregator.client.get("/v1/admin/trust", headers=ADMIN).json() == {}  # FedAvg keeps no trust
    alice, _ = aggregator.register("alice"), aggregator.register("bob")
    aggregator.client.post("/v1/admin/rounds/0/open", headers=ADMIN)
    aggregator.client.post("/v1/rounds/0/updates", headers=alice, **submission(1.0))
    aggregator.client.post("/v1/admin/rounds/0/close", headers=ADMIN)
    audit = aggregator.client.get("/v1/admin/decisions", headers=ADMIN)
    assert audit.status_code == 200 and [(r["client_id"], r["round_index"]) for r in audit.json()] == [
        ("alice", 0)
    ]
    assert aggregator.client.get("/v1/admin/decisions").status_code == 401


def test_global_versions_are_validated_and_missing_ones_are_404(aggregator):
    assert aggregator.client.get("/v1/admin/global/0", headers=ADMIN).status_code == 200
    assert aggregator.client.get("/v1/admin/global/3", headers=ADMIN).status_code == 404
    assert aggregator.client.get("/v1/admin/global/-1", headers=ADMIN).status_code == 422
