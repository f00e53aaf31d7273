"""The audit service through real HTTP against a real Ray Serve app (one app for the whole module).

A tiny-llama adapter saved by PEFT's `save_pretrained` is audited exactly as a client would send it; the
served score must equal the in-process HarmPreferenceAudit on the same base and canaries.
"""

from __future__ import annotations

import asyncio
import copy
import json
import pickle
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from services.aggregator.scoring import HandleAuditor, HttpAuditor, ScoringPolicy, audit_update
from services.audit_service.client import AuditServiceClient
from services.audit_service.settings import AuditServiceSettings
from services.probe_service.settings import AutoscalingSettings
from shared.audit import CanarySettings, HarmPreferenceAudit, draw_canaries
from shared.config import LoraSettings
from shared.lora import attach_lora, get_lora_state, set_lora_state
from shared.updates import ClientUpdate, encode_lora_state

ray = pytest.importorskip("ray")
# precision: the served and in-process audits agree to 1e-4 in float32 and bf16 alike, which needs the rotary
# frequencies of the bf16 base to stay float32 on both sides (shared.precision.cast_parameters).
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.precision]
CANARIES = CanarySettings(size=6, max_seq_len=64, batch_size=12)


def _planted(init: dict, seed: int, scale: float) -> dict:
    rng = np.random.default_rng(seed)
    return {
        k: (rng.normal(size=v.shape) * scale).astype(np.float32) if "lora_B" in k else v.copy()
        for k, v in init.items()
    }


@pytest.fixture(scope="module")
def adapters(tiny, tmp_path_factory):
    """The LoRA init, two planted adapters, and the first one saved with PEFT's save_pretrained."""
    model = attach_lora(copy.deepcopy(tiny.model), LoraSettings())
    init = get_lora_state(model)
    first, second = _planted(init, 3, 0.05), _planted(init, 4, 0.05)
    set_lora_state(model, first)
    directory = tmp_path_factory.mktemp("peft") / "adapter"
    model.save_pretrained(directory, save_embedding_layers=False)
    return init, first, second, directory


@pytest.fixture(scope="module")
def expected(tiny, pools):
    """The in-process audit on the same base and canaries."""
    canaries = draw_canaries(pools, CANARIES)
    return HarmPreferenceAudit(copy.deepcopy(tiny.model), tiny.tokenizer, LoraSettings(), canaries, CANARIES)


@pytest.fixture(scope="module")
def service(tiny, free_port):
    from ray import serve

    from services.audit_service.deployment import start_audit_service

    settings = AuditServiceSettings(
        models=("tiny-llama",),
        canaries=CANARIES,
        port=free_port(),
        max_body_bytes=1024 * 1024,
        autoscaling=AutoscalingSettings(min_replicas=1, max_replicas=1),
        batch_wait_timeout_s=0.2,
    )
    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False, configure_logging=False)
    url = start_audit_service(settings)
    yield url, settings
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def client(service):
    with AuditServiceClient(service[0], timeout_s=120) as c:
        yield c


def test_a_peft_directory_is_audited_as_the_in_process_scorer_audits_it(client, adapters, expected):
    init, first, _, directory = adapters
    assert (
        json.loads((directory / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-llama"
    )
    [(score, preference, base)] = expected.audit([first], init)
    result = client.audit_dir(directory)  # no reference: the LoRA init, i.e. the base model
    assert result.base_model == "tiny-llama" and result.reference == "lora_init" and result.num_canaries == 6
    assert result.score == pytest.approx(score, abs=1e-4)
    assert result.harm_preference == pytest.approx(preference, abs=1e-4)
    assert result.reference_harm_preference == pytest.approx(base, abs=1e-4)
    assert score != 0.0


def test_the_reference_is_the_global_adapter_and_itself_scores_zero(client, adapters, expected):
    _, first, second, _ = adapters
    [(score, _, _)] = expected.audit([second], first)
    against_first = client.audit(second, reference=first, base_model="tiny-llama")
    assert against_first.reference == "given" and against_first.score == pytest.approx(score, abs=1e-4)
    assert client.audit(first, reference=first).score == pytest.approx(0.0, abs=1e-6)


def test_concurrent_audits_are_batched_and_equal_single_ones_and_the_handle_agrees(client, adapters, service):
    from services.audit_service.deployment import audit_handle

    init, first, second, _ = adapters
    singles = [client.audit(s, reference=init).score for s in (first, second)]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(lambda s: client.audit(s, reference=init).score, [first, second] * 2))
    np.testing.assert_allclose(concurrent, singles * 2, atol=1e-5)
    outcome = audit_handle(service[1]).audit.remote("tiny-llama", second, init).result()
    assert outcome.score == pytest.approx(singles[1], abs=1e-5)
    in_ray = asyncio.run(HandleAuditor(audit_handle(service[1])).audit("tiny-llama", second, init))
    assert in_ray == pytest.approx(singles[1], abs=1e-5)


def test_the_aggregators_http_auditor_scores_an_update_and_reports_an_outage(
    service, adapters, expected, free_port
):
    init, first, _, _ = adapters
    [(score, _, _)] = expected.audit([first], init)
    update = ClientUpdate("client-000", 0, 8, first)
    policy = ScoringPolicy(timeout_s=60, attempts=2, backoff_s=0)
    got = asyncio.run(audit_update(HttpAuditor(service[0]), "tiny-llama", update.lora_state, init, policy))
    assert got.to_json() == {"audit": [pytest.approx(score, abs=1e-4)]}
    nobody = HttpAuditor(f"http://127.0.0.1:{free_port()}/audit")
    down = asyncio.run(audit_update(nobody, "tiny-llama", update.lora_state, init, policy))
    assert list(down.to_json()) == ["audit_error"] and str(down.audit_error).startswith("ConnectError")


def _error(response: httpx.Response, status: int, code: str, *needles: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code, body
    for needle in needles:
        assert needle in body["detail"], body["detail"]


def test_bad_input_gets_a_clear_4xx(service, adapters):
    url, _ = service
    _, first, _, directory = adapters
    blob = encode_lora_state(first)
    config = json.loads((directory / "adapter_config.json").read_text())
    key = next(iter(first))
    octet = {"content-type": "application/octet-stream"}

    def multipart(**parts: bytes) -> list:
        return [(name, (name, data, "application/octet-stream")) for name, data in parts.items()]

    with httpx.Client(base_url=url, timeout=60) as http:
        _error(http.post("/v1/audit", json={"adapter": []}), 415, "unsupported_media_type")
        _error(
            http.post("/v1/audit", content=b"x" * (1024 * 1024 + 1), headers=octet), 413, "payload_too_large"
        )
        _error(
            http.post("/v1/audit", content=b"not safetensors", headers=octet),
            422,
            "invalid_update",
            "adapter",
        )
        _error(http.post("/v1/audit", content=pickle.dumps(first), headers=octet), 422, "invalid_update")
        wrong_shape = encode_lora_state({**first, key: np.zeros((1, 1), np.float32)})
        _error(http.post("/v1/audit", content=wrong_shape, headers=octet), 422, "invalid_update", "shape")
        missing = encode_lora_state({k: v for k, v in first.items() if k != key})
        _error(http.post("/v1/audit", content=missing, headers=octet), 422, "invalid_update", "missing")
        nan = encode_lora_state({**first, key: np.full_like(first[key], np.nan)})
        _error(http.post("/v1/audit", content=nan, headers=octet), 422, "invalid_update", "NaN")
        bad_reference = multipart(adapter=blob, reference=wrong_shape)
        _error(http.post("/v1/audit", files=bad_reference), 422, "invalid_update", "reference")
        _error(http.post("/v1/audit", files=multipart(config=b"{}")), 422, "invalid_update", "adapter")
        twice = [*multipart(adapter=blob), *multipart(adapter=blob)]
        _error(http.post("/v1/audit", files=twice), 422, "invalid_update", "exactly one")
        alpha = json.dumps({**config, "lora_alpha": 32}).encode()
        _error(
            http.post("/v1/audit", files=multipart(adapter=blob, config=alpha)),
            422,
            "invalid_update",
            "alpha",
        )
        dora = json.dumps({**config, "use_dora": True}).encode()
        _error(
            http.post("/v1/audit", files=multipart(adapter=blob, config=dora)),
            422,
            "invalid_update",
            "use_dora",
        )
        _error(
            http.post("/v1/audit", files=multipart(adapter=blob, config=b"[1")), 422, "invalid_update", "JSON"
        )
        unknown = http.post("/v1/audit", content=blob, headers=octet, params={"base_model": "smollm2-135m"})
        _error(unknown, 404, "model_not_held", "tiny-llama")
        # after all of that, the service still audits
        ok = http.post("/v1/audit", content=blob, headers=octet)
        assert ok.status_code == 200 and ok.json()["reference"] == "lora_init"
        models = http.get("/v1/models").json()
        assert models["models"] == ["tiny-llama"] and models["shared_base"] == {"tiny-llama": True}
        assert http.get("/readyz").status_code == 200
