"""services/aggregator/api/routes/clients.py in process: register, task, global download, submission."""

import numpy as np

from shared.updates import decode_lora_state
from tests.unit.api.apps import ADMIN, adapter, submission


def test_register_returns_a_token_once_and_refuses_a_spent_token(aggregator):
    [token] = aggregator.service.registrar.issue(1, "alice")
    first = aggregator.client.post("/v1/clients", json={"client_id": "alice", "enrollment_token": token})
    assert first.status_code == 201 and first.json()["client_id"] == "alice" and first.json()["token"]
    again = aggregator.client.post("/v1/clients", json={"client_id": "bob", "enrollment_token": token})
    assert again.status_code == 403, again.text
    bad_id = aggregator.client.post("/v1/clients", json={"client_id": "no spaces", "enrollment_token": token})
    assert bad_id.status_code == 422 and bad_id.json()["detail"][0]["loc"] == ["body", "client_id"]


def test_task_says_what_to_train_and_needs_the_clients_own_token(aggregator):
    alice, bob = aggregator.register("alice"), aggregator.register("bob")
    idle = aggregator.client.get("/v1/task", headers=alice).json()
    assert idle["round_index"] is None and not idle["sampled"]
    assert (idle["local_steps"], idle["batch_size"], idle["max_num_samples"]) == (5, 4, 20)
    assert aggregator.client.post("/v1/admin/rounds/0/open", headers=ADMIN).status_code == 200
    task = aggregator.client.get("/v1/task", headers=alice).json()
    assert (task["round_index"], task["phase"], task["sampled"], task["global_version"]) == (
        0,
        "open",
        True,
        0,
    )
    assert aggregator.client.get("/v1/task", headers={"x-client-id": "alice"}).status_code == 401
    stolen = {"x-client-id": "alice", "authorization": bob["authorization"]}
    assert aggregator.client.get("/v1/task", headers=stolen).status_code == 403


def test_global_adapter_download_and_an_unknown_version(aggregator):
    alice = aggregator.register("alice")
    answer = aggregator.client.get("/v1/global/0", headers=alice)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/octet-stream"
    downloaded = decode_lora_state(answer.content)
    assert sorted(downloaded) == sorted(adapter())
    np.testing.assert_array_equal(downloaded[sorted(adapter())[0]], adapter()[sorted(adapter())[0]])
    assert aggregator.client.get("/v1/global/7", headers=alice).status_code == 404


def test_submission_is_accepted_once_and_bad_ones_get_a_reason(aggregator):
    alice, _ = aggregator.register("alice"), aggregator.register("bob")
    aggregator.client.post("/v1/admin/rounds/0/open", headers=ADMIN)
    first = aggregator.client.post("/v1/rounds/0/updates", headers=alice, **submission(1.0))
    assert first.status_code == 202 and first.json()["duplicate"] is False
    retry = aggregator.client.post("/v1/rounds/0/updates", headers=alice, **submission(1.0))
    assert retry.status_code == 202 and retry.json() == {
        "update_id": first.json()["update_id"],
        "duplicate": True,
    }
    garbage = {"files": {"adapter": ("a.safetensors", b"not safetensors")}, "data": submission(1.0)["data"]}
    not_safetensors = aggregator.client.post("/v1/rounds/0/updates", headers=alice, **garbage)
    assert not_safetensors.status_code == 422 and "safetensors" in not_safetensors.json()["detail"]
    too_many = aggregator.client.post(
        "/v1/rounds/0/updates", headers=alice, **submission(1.0, num_samples=21)
    )
    assert (
        too_many.status_code == 422
        and "num_samples 21 > the task's subset of 20" in too_many.json()["detail"]
    )
    closed = aggregator.client.post("/v1/rounds/5/updates", headers=alice, **submission(1.0))
    assert closed.status_code == 409 and "round 5 is not open" in closed.json()["detail"]
    assert len(aggregator.store.update_ids(0)) == 1  # nothing refused was stored
