"""services/probe_service/api/routes/probes.py in process: the registry, read-only."""


def test_list_and_one_manifest(probe_app):
    listed = probe_app.client.get("/v1/probes")
    assert listed.status_code == 200
    [info] = listed.json()
    assert (info["probe_id"], info["base_model"], info["lora_r"], info["dim"], info["threshold"]) == (
        "toy-probe",
        "toy-model",
        2,
        18,
        0.8,
    )
    manifest = probe_app.client.get("/v1/probes/toy-probe").json()
    assert manifest["probe_id"] == "toy-probe" and manifest["feature_spec"]["policy"] == "first_B"


def test_an_unknown_probe_is_404_with_a_reason(probe_app):
    answer = probe_app.client.get("/v1/probes/nope")
    assert answer.status_code == 404 and "nope" in answer.json()["detail"]
