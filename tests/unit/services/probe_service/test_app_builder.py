"""build_app: the probe service from a Serve config's `args` (no Ray cluster needed to build it)."""

from __future__ import annotations

import pydantic
import pytest
from ray.serve.deployment import Deployment

from services.probe_service.app_builder import build_app, settings_from_args


def _deployments(args: dict) -> tuple[Deployment, Deployment, dict]:
    ingress = build_app(args)._bound_deployment
    (scorer_app, raw_settings) = ingress.init_args
    return ingress, scorer_app._bound_deployment, raw_settings


def test_args_become_the_deployments_options_and_settings() -> None:
    ingress, scorer, raw = _deployments(
        {
            "max_body_bytes": 1024,
            "scorer_num_cpus": 1.5,
            "ingress_num_cpus": 0.25,
            "max_ongoing_requests": 16,
            "scorer_autoscaling": {"min_replicas": 2, "max_replicas": 8, "target_ongoing_requests": 3},
        }
    )
    assert (ingress.name, scorer.name) == ("ProbeIngress", "ProbeScorer")
    assert (ingress.ray_actor_options["num_cpus"], scorer.ray_actor_options["num_cpus"]) == (0.25, 1.5)
    assert (ingress.max_ongoing_requests, scorer.max_ongoing_requests) == (16, 16)
    scaling = scorer._deployment_config.autoscaling_config
    assert (scaling.min_replicas, scaling.max_replicas, scaling.target_ongoing_requests) == (2, 8, 3)
    assert ingress._deployment_config.autoscaling_config.max_replicas == 2  # the settings' default
    assert raw["max_body_bytes"] == 1024
    assert settings_from_args({"scorer_num_cpus": 1.5}).ort_threads == 1


def test_an_unknown_arg_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"unknown probe service args \['max_replicas'\]; known: app_name"):
        build_app({"max_replicas": 8})


def test_inconsistent_autoscaling_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="min_replicas 5 > max_replicas 2"):
        build_app({"scorer_autoscaling": {"min_replicas": 5, "max_replicas": 2}})
