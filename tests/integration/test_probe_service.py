"""The probe service through real HTTP against a real Ray Serve app (one app for the whole module).

The probe is planted over a real tiny-llama PEFT adapter layout, so a directory written by PEFT's
`save_pretrained` is scored exactly as a client would send it.
"""

from __future__ import annotations

import json
import os
import pickle

import httpx
import numpy as np
import pytest
from safetensors.numpy import save as save_safetensors

from probes.artifact import export_linear_probe
from services.probe_service.client import ProbeServiceClient, RetryPolicy
from services.probe_service.settings import AutoscalingSettings, ProbeServiceSettings
from shared.config import LoraSettings
from shared.features import FeatureSpec
from shared.lora import attach_lora, get_lora_state, set_lora_state

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.integration, pytest.mark.slow]
PROBE_ID = "tiny-llama-qv-r8"


@pytest.fixture(scope="module")
def adapter(tiny, tmp_path_factory):
    """A tiny-llama adapter saved with PEFT's save_pretrained, and its state."""
    import copy

    model = attach_lora(copy.deepcopy(tiny.model), LoraSettings())
    state = get_lora_state(model)
    rng = np.random.default_rng(3)
    state = {
        k: (rng.normal(size=v.shape) * 0.01).astype(np.float32) if "lora_B" in k else v
        for k, v in state.items()
    }
    set_lora_state(model, state)
    directory = tmp_path_factory.mktemp("peft") / "adapter"
    model.save_pretrained(directory, save_embedding_layers=False)
    return directory, state


@pytest.fixture(scope="module")
def service(tiny, adapter, tmp_path_factory, free_port):
    from ray import serve

    from services.probe_service.deployment import start_probe_service

    _, state = adapter
    spec = FeatureSpec.for_adapter(state, "first_B")
    root = tmp_path_factory.mktemp("registry")
    weight = spec.raw(state)  # the saved adapter points exactly along w: a confident "malicious"
    export_linear_probe(
        root / PROBE_ID,
        PROBE_ID,
        weight / np.linalg.norm(weight) * 20,
        0.0,
        spec,
        base_model="tiny-llama",
        fingerprint=tiny.fingerprint,
        lora=LoraSettings(),
        threshold=0.8,
        training_data_hash="0" * 16,
    )
    settings = ProbeServiceSettings(
        artifacts_dir=root,
        port=free_port(),
        max_body_bytes=4 * 1024 * 1024,
        max_updates_per_request=256,
        scorer_autoscaling=AutoscalingSettings(min_replicas=1, max_replicas=1),
        ingress_autoscaling=AutoscalingSettings(min_replicas=1, max_replicas=1),
    )
    # The HTTP entry the settings choose (HAProxy by default) must be in Ray's environment when it starts.
    saved = dict(os.environ)
    os.environ.update(settings.ray_environment())
    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False, configure_logging=False)
    url = start_probe_service(settings)
    yield url, spec, settings
    serve.shutdown()
    ray.shutdown()
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def client(service):
    with ProbeServiceClient(service[0], timeout_s=30) as c:
        yield c


def _error(response: httpx.Response, status: int, *needles: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    for needle in needles:
        assert needle in detail, detail


def test_a_peft_save_pretrained_directory_scores(client, adapter):
    directory, _ = adapter
    assert (
        json.loads((directory / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-llama"
    )
    result = client.score_adapter_dir(directory)
    assert result.probe_id == PROBE_ID and result.verdict == "malicious" and result.probability > 0.99
    assert result.feature_spec_version == "1" and result.threshold == 0.8


def test_every_input_form_gives_the_same_score(client, adapter, service):
    _, state = adapter
    _, spec, _ = service
    expected = client.score_adapter_dir(adapter[0]).probability
    raw = client.score_adapter(state, base_model="tiny-llama", r=8, target_modules=("q_proj", "v_proj"))
    snapshot = client.score_snapshots(spec.raw(state)[None], probe_id=PROBE_ID).results[0]
    zero = {k: np.zeros_like(v) for k, v in state.items()}
    against_zero = client.score_adapter(state, probe_id=PROBE_ID, reference=zero)
    for got in (raw.probability, snapshot.probability, against_zero.probability):
        assert got == pytest.approx(expected, abs=1e-6)
    # a reference equal to the adapter leaves a zero delta: the probe sees nothing (sigmoid(0))
    same = client.score_adapter(state, probe_id=PROBE_ID, reference=state)
    assert same.probability == pytest.approx(0.5, abs=1e-6) and same.verdict == "benign"


def test_batch_equals_singles_and_in_ray_handle_agrees(client, service):
    from services.probe_service.deployment import scorer_handle

    _, spec, settings = service
    rows = np.random.default_rng(0).normal(size=(40, spec.dim)).astype(np.float32)
    batch = client.score_snapshots(rows, probe_id=PROBE_ID)
    singles = [
        client.score_snapshots(row[None], probe_id=PROBE_ID).results[0].probability for row in rows[:8]
    ]
    np.testing.assert_allclose([r.probability for r in batch.results[:8]], singles, atol=1e-6)
    assert batch.flagged == sum(r.probability >= 0.8 for r in batch.results)
    handle = scorer_handle(settings)
    in_ray = handle.score.remote(PROBE_ID, rows).result()
    np.testing.assert_allclose(in_ray, [r.probability for r in batch.results], atol=1e-6)


def test_json_snapshots_and_registry_endpoints(service, client):
    url, spec, _ = service
    row = np.linspace(-1, 1, spec.dim).round(4).tolist()
    response = httpx.post(f"{url}/v1/score/batch", json={"base_model": "tiny-llama", "snapshots": [row, row]})
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 2
    [info] = client.probes()
    assert (info.probe_id, info.dim, info.lora_r) == (PROBE_ID, spec.dim, 8)
    assert client.probe(PROBE_ID).feature_spec == spec
    assert client.ready()
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    metrics = httpx.get(f"{url}/metrics").text
    assert f'probe_service_updates_scored_total{{probe_id="{PROBE_ID}"}}' in metrics
    assert 'probe_service_requests_total{route="/v1/score/batch",status="200"}' in metrics
    openapi = httpx.get(f"{url}/openapi.json").json()
    body = openapi["paths"]["/v1/score"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/octet-stream", "application/json"} <= set(body)
    assert "examples" in json.dumps(openapi["components"]["schemas"]["ScoreResponse"])


def test_bad_input_gets_its_status_and_a_message(service, adapter):
    url, spec, settings = service
    _, state = adapter
    post = httpx.Client(base_url=url, timeout=30).post
    blob = save_safetensors({k: np.ascontiguousarray(v) for k, v in state.items()})
    octet = {"content-type": "application/octet-stream"}

    # 413: declared too large, and too many updates in one batch
    big = b"\0" * (settings.max_body_bytes + 1)
    _error(post("/v1/score", content=big, headers=octet), 413, "exceeds the limit")
    rows = np.zeros((settings.max_updates_per_request + 1, spec.dim), np.float32)
    body = save_safetensors({"snapshots": rows})
    _error(
        post("/v1/score/batch", content=body, headers=octet, params={"probe_id": PROBE_ID}),
        413,
        "257 updates",
    )
    # 415
    _error(post("/v1/score", content=b"x", headers={"content-type": "text/plain"}), 415, "text/plain")
    # 422: truncated, NaN, wrong shape, wrong dtype, pickle, missing keys, several updates on /v1/score
    params = {"probe_id": PROBE_ID}
    _error(post("/v1/score", content=blob[:-100], headers=octet, params=params), 422, "truncated")
    key = spec.keys[0]
    nan_state = {**state, key: np.where(np.arange(state[key].size).reshape(state[key].shape) == 5, np.nan, 0)}
    nan_blob = save_safetensors({k: np.ascontiguousarray(v, np.float32) for k, v in nan_state.items()})
    _error(post("/v1/score", content=nan_blob, headers=octet, params=params), 422, key, "nan at index")
    wide = {**state, key: np.zeros((state[key].shape[0], 16), np.float32)}
    wide_blob = save_safetensors({k: np.ascontiguousarray(v) for k, v in wide.items()})
    _error(post("/v1/score", content=wide_blob, headers=octet, params=params), 422, key, "LoRA rank")
    ints = save_safetensors({"snapshots": np.zeros((1, spec.dim), np.int32)})
    _error(post("/v1/score", content=ints, headers=octet, params=params), 422, "I32")
    _error(post("/v1/score", content=pickle.dumps(state), headers=octet, params=params), 422, "safetensors")
    no_b = save_safetensors({k: np.ascontiguousarray(v) for k, v in state.items() if "lora_B" not in k})
    _error(
        post("/v1/score", content=no_b, headers=octet, params=params),
        422,
        "no per-layer lora_B tensors",
    )
    two = save_safetensors({"snapshots": np.zeros((2, spec.dim), np.float32)})
    _error(post("/v1/score", content=two, headers=octet, params=params), 422, "use /v1/score/batch")
    _error(post("/v1/score/batch", content=b"{", headers={"content-type": "application/json"}), 422, "JSON")
    short = {"probe_id": PROBE_ID, "snapshots": [[0.1] * (spec.dim - 1)]}
    _error(post("/v1/score/batch", json=short), 422, f"snapshot width {spec.dim - 1}", f"expects {spec.dim}")
    form = {"adapter": ("a", blob), "config": ("c", b"{not json")}
    _error(post("/v1/score", files=form), 422, "adapter_config.json")
    # 404: unknown probe id; no probe for the base model (says how to train one)
    _error(post("/v1/score", content=blob, headers=octet, params={"probe_id": "nope"}), 404, "unknown probe")
    _error(
        post("/v1/score", content=blob, headers=octet, params={"base_model": "llama-8b"}), 404, "probe build"
    )
    _error(httpx.get(f"{url}/v1/probes/nope"), 404, "unknown probe")


def test_retries_cover_a_service_that_is_not_up_yet(free_port):
    closed = ProbeServiceClient(f"http://127.0.0.1:{free_port()}", timeout_s=1, retry=RetryPolicy(2, 0.01))
    with pytest.raises(httpx.ConnectError):
        closed.probes()
    assert not closed.ready()


def test_the_aggregator_http_scorer_matches_and_reports_an_unreachable_service(client, service, free_port):
    import asyncio

    from services.aggregator.inputs import Inputs
    from services.aggregator.scoring import HttpScorer, ScoringPolicy, score_update

    url, spec, _ = service
    rows = np.random.default_rng(1).normal(size=(5, spec.dim)).astype(np.float32)
    expected = [r.probability for r in client.score_snapshots(rows, probe_id=PROBE_ID).results]
    got = asyncio.run(score_update(HttpScorer(url), PROBE_ID, {Inputs.STEPS: rows}, ScoringPolicy()))
    assert got.steps is not None and got.error is None
    np.testing.assert_allclose(got.steps, expected, atol=1e-6)
    policy = ScoringPolicy(timeout_s=2, attempts=2, backoff_s=0.01)
    down = HttpScorer(f"http://127.0.0.1:{free_port()}")
    missing = asyncio.run(score_update(down, PROBE_ID, {Inputs.STEPS: rows}, policy))
    assert set(missing.to_json()) == {"error"} and "ConnectError" in str(missing.error)
