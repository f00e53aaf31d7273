"""build_app: the audit service from a Serve config's `args` and SAFE_FEDLLM_AUDIT_* (no Ray, no model)."""

from __future__ import annotations

import os

import pydantic
import pytest
import ray

from services.audit_service import app_builder
from services.audit_service.app_builder import BaseHolder, build_app
from services.audit_service.settings import AuditServiceSettings


@pytest.fixture
def no_ray(monkeypatch) -> None:
    """As outside a cluster, even if an earlier test of the session started Ray; loading a base fails."""
    for name in [n for n in os.environ if n.startswith("SAFE_FEDLLM_AUDIT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)

    def refuse(models: tuple[str, ...]) -> dict:
        raise AssertionError(f"build_app loaded {models}")

    monkeypatch.setattr(app_builder, "publish_bases", refuse)


def test_args_and_env_become_the_deployment_and_its_settings(no_ray, monkeypatch) -> None:
    # Env fills what the args leave out, field by field inside nested settings; args win where both say.
    monkeypatch.setenv("SAFE_FEDLLM_AUDIT_CANARIES__SAFE_SENTENCES", "3")
    monkeypatch.setenv("SAFE_FEDLLM_AUDIT_CANARIES__SIZE", "8")
    monkeypatch.setenv("SAFE_FEDLLM_AUDIT_AUTOSCALING__MAX_REPLICAS", "6")
    app = build_app(
        {
            "models": ["tiny-llama"],
            "num_cpus": 2,
            "max_ongoing_requests": 4,
            "autoscaling": {"min_replicas": 0, "target_ongoing_requests": 3},
            "canaries": {"size": 32, "seed": 11},
        }
    )
    deployment = app._bound_deployment
    raw_settings, base_refs = deployment.init_args
    assert deployment.name == "AuditScorer"
    assert (deployment.ray_actor_options, deployment.max_ongoing_requests) == ({"num_cpus": 2}, 4)
    scaling = deployment._deployment_config.autoscaling_config
    assert (scaling.min_replicas, scaling.max_replicas, scaling.target_ongoing_requests) == (0, 6, 3)
    settings = AuditServiceSettings(**raw_settings)  # what each replica rebuilds
    assert settings.models == ("tiny-llama",)
    assert (settings.canaries.size, settings.canaries.seed, settings.canaries.safe_sentences) == (32, 11, 3)
    assert settings.torch_threads == 2
    assert base_refs == {}  # outside Ray nothing is published: each replica loads its own base


def test_an_unknown_arg_is_refused_by_name(no_ray) -> None:
    with pytest.raises(ValueError, match=r"unknown audit service args \['threshold'\]; known: app_name"):
        build_app({"threshold": 0.2})


def test_inconsistent_autoscaling_is_refused(no_ray) -> None:
    with pytest.raises(pydantic.ValidationError, match="min_replicas 3 > max_replicas 2"):
        build_app({"autoscaling": {"min_replicas": 3, "max_replicas": 2}})


def test_the_holder_loads_each_base_once_and_keeps_it(monkeypatch) -> None:
    loaded: list[tuple[str, ...]] = []

    def publish(models: tuple[str, ...]) -> dict:
        loaded.append(models)
        return {name: f"ref-of-{name}-{len(loaded)}" for name in models}

    monkeypatch.setattr(app_builder, "publish_bases", publish)
    holder = BaseHolder()
    assert holder.publish(("a", "b")) == {"a": "ref-of-a-1", "b": "ref-of-b-2"}
    # A rebuild (new serveConfigV2) reuses what the cluster holds and loads only what is new.
    assert holder.publish(("b", "c")) == {"b": "ref-of-b-2", "c": "ref-of-c-3"}
    assert loaded == [("a",), ("b",), ("c",)]
