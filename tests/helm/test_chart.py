"""The chart renders with a real Helm engine, lints clean, and every object passes its schema and checks."""

from __future__ import annotations

import base64
import copy
import importlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml
from ray.serve import Application

CHART = Path(__file__).resolve().parents[2] / "helm" / "safe-fedllm"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
MUTATIONS = Path(__file__).parent / "mutations"

# Each broken values file and the words of the refusal (from Helm's schema check, a template's `fail`, or the
# chart checks); each must be refused with its own reason, not merely refused.
REFUSALS = {
    "typo-in-autoscaling.yaml": "additional properties 'maxReplica' not allowed",
    "scorer-min-above-max.yaml": "scorer.autoscaling.minReplicas (6) must not exceed maxReplicas (2)",
    "workers-min-above-max.yaml": "probeService.workers.minReplicas (3) must not exceed maxReplicas (2)",
    "external-redis-without-url.yaml": "/externalRedis/url",
    "unknown-defense.yaml": "at '/aggregator/defense': value must be one of",
    "name-too-long.yaml": "at '/fullnameOverride': maxLength",
    "redis-password-not-url-safe.yaml": "at '/redis/password'",
    "probe-volume-without-source.yaml": "at '/probeArtifacts'",
    "serve-port-on-dashboard.yaml": "at '/probeService/servePort'",
    "replicas-exceed-workers.yaml": "probe replicas need 16.5 CPUs at most, worker pods offer 4 (",
    "replicas-exceed-millicore-workers.yaml": "probe replicas need 3.5 CPUs at most, worker pods offer 3 (",
    "worker-pod-without-limits.yaml": "probeService.workers.resources.limits needs cpu and memory",
    "root-pod.yaml": "at '/podSecurityContext/runAsUser'",
    "privileged-container.yaml": "at '/securityContext/privileged'",
    "added-capability.yaml": "at '/securityContext/capabilities/add'",
    "unconfined-seccomp.yaml": "at '/podSecurityContext/seccompProfile/type'",
    "gcs-fault-tolerance-without-chart-redis.yaml": "keeps the Ray head's GCS state in the chart's Redis",
    "service-monitor-without-metrics.yaml": "set aggregator.exposeMetrics=true",
    "secrets-required-but-missing.yaml": (
        "generateSecrets is false: set redis.password (or its existingSecret) instead of generating"
    ),
    "redis-without-memory-limit.yaml": "at '/redis/resources",
    "ray-auth-unknown-mode.yaml": "at '/probeService/rayAuth/mode'",
    "retain-zero-rounds.yaml": "at '/aggregator/retainRounds'",
    "weak-admin-token.yaml": "at '/aggregator/auth/adminToken'",
    "autoscaler-off-with-range.yaml": "probeService.rayAutoscaler.enabled is false",
    "audit-level-without-audit.yaml": 'defense "audit+shadow" needs the audit service: set audit.enabled',
    "aggregate-audit-without-audit.yaml": "aggregator.auditLevel.aggregateThreshold needs the audit service",
    "audit-min-above-max.yaml": "audit.autoscaling.minReplicas (4) must not exceed maxReplicas (2)",
    "audit-route-on-probe-root.yaml": "at '/audit/routePrefix'",
    "audit-replicas-exceed-workers.yaml": "audit replicas need 14.5 CPUs at most, worker pods offer 8 (",
    "audit-replica-exceeds-pod-memory.yaml": (
        "an audit replica reserves 1610612736 bytes (audit.replica.memoryBytes), "
        "a worker pod's Ray memory is 1503238553"
    ),
}
AUDIT_URL = "http://fl-safe-fedllm-probe-serve-svc.federation.svc:8000/audit"


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.name)
def test_ci_values_render_to_valid_objects(kit, rendered, values_file: Path) -> None:
    values = kit.load_values(values_file)
    objects = rendered(values)
    assert kit.chart_problems(values, objects) == []


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.name)
def test_lint_strict_is_clean(kit, values_file: Path) -> None:
    report = helm_python.lint(CHART, kit.load_values(values_file), strict=True, namespace=kit.namespace)
    assert report["errors"] == []
    # Severity 1 (INFO) is only "icon is recommended"; warnings and errors fail strict lint.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_every_ci_values_file_and_mutation_is_covered() -> None:
    assert {p.name for p in CI_VALUES} >= {
        "default-values.yaml",
        "external-redis-values.yaml",
        "probe-scale-values.yaml",
        "audit-values.yaml",
    }
    assert {p.name for p in MUTATIONS.glob("*.yaml")} == set(REFUSALS)


@pytest.mark.parametrize("mutation", sorted(REFUSALS), ids=str)
def test_broken_values_are_refused(kit, mutation: str) -> None:
    values = kit.load_values(MUTATIONS / mutation)
    try:
        objects = kit.chart().render(values, name=kit.release, namespace=kit.namespace)
    except (helm_python.HelmValuesError, helm_python.HelmRenderError) as error:
        assert REFUSALS[mutation] in str(error)
        return
    texts = [text for name, text in objects.items() if not name.endswith("NOTES.txt")]
    problems = kit.chart_problems(values, [doc for text in texts for doc in yaml.safe_load_all(text) if doc])
    assert any(REFUSALS[mutation] in p for p in problems), problems


def test_a_kind_without_schema_fails(kit) -> None:
    unknown = {"apiVersion": "example.com/v1", "kind": "Frobnicator", "metadata": {"name": "x"}, "spec": {}}
    assert kit.schema_errors(unknown) == [
        "Frobnicator/x: no schema for example.com/v1 Frobnicator in Kubernetes 1.27.0",
        "Frobnicator/x: no schema for example.com/v1 Frobnicator in Kubernetes 1.37.0",
    ]


def test_crd_validation_refuses_unknown_and_mistyped_fields(kit, rendered) -> None:
    service = kit.one(rendered(), "RayService")
    assert kit.schema_errors(service) == []
    broken = copy.deepcopy(service)
    broken["spec"]["rayClusterConfig"]["enableInTreeAutoscalling"] = True
    broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = "four"
    errors = kit.schema_errors(broken)
    assert any("'enableInTreeAutoscalling' was unexpected" in e for e in errors), errors
    assert any("workerGroupSpecs/0/maxReplicas: 'four' is not of type 'integer'" in e for e in errors), errors
    assert len(errors) == 2


def test_kubernetes_validation_refuses_unknown_fields(kit, rendered) -> None:
    deployment = kit.one(rendered(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    errors = kit.schema_errors(deployment)
    assert len(errors) == 2 and all("'livenesProbe' was unexpected" in e for e in errors), errors


def test_operator_rules(kit, rendered) -> None:
    service = kit.one(rendered(), "RayService")
    assert kit.kuberay_rule_errors(service) == []
    service["metadata"]["name"] = "x" * 48
    group = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    group.update(minReplicas=3, maxReplicas=2, replicas=3)
    name = service["metadata"]["name"]
    assert kit.kuberay_rule_errors(service) == [
        f"RayService/{name}: name longer than 47 characters",
        f"RayService/{name}: group probe has minReplicas 3 greater than maxReplicas 2",
        f"RayService/{name}: group probe replicas 3 outside [3, 2]",
    ]


def test_cross_checks_catch_a_wrong_url_and_selector(kit, rendered) -> None:
    objects = rendered()
    config = kit.one(objects, "ConfigMap")["data"]
    config["SAFE_FEDLLM_AGGREGATOR_PROBE_URL"] = "http://fl-safe-fedllm-probe-svc.federation.svc:8000"
    service = next(
        s for s in kit.by_kind(objects, "Service") if s["metadata"]["name"] == "fl-safe-fedllm-redis"
    )
    service["spec"]["selector"]["app.kubernetes.io/component"] = "redis-primary"
    errors = kit.reference_errors(objects, {})
    assert errors == [
        "Service/fl-safe-fedllm-redis: selector matches no pod",
        "probe URL host fl-safe-fedllm-probe-svc is not KubeRay's Serve service of fl-safe-fedllm-probe",
    ]


def test_probe_service_is_elastic_and_head_runs_no_replicas(kit, rendered) -> None:
    values = kit.load_values(CHART / "ci" / "probe-scale-values.yaml")
    service = kit.one(rendered(values), "RayService")
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (workers,) = cluster["workerGroupSpecs"]
    assert (workers["minReplicas"], workers["replicas"], workers["maxReplicas"]) == (1, 1, 4)
    serve = yaml.safe_load(service["spec"]["serveConfigV2"])
    (app,) = serve["applications"]
    assert app["import_path"] == "services.probe_service.app_builder:build_app"
    deployments = {d["name"]: d for d in app["deployments"]}
    scorer = deployments["ProbeScorer"]["autoscaling_config"]
    assert (scorer["min_replicas"], scorer["max_replicas"], scorer["target_ongoing_requests"]) == (1, 8, 2)
    # The app's own settings carry the same numbers, so code and config agree.
    assert app["args"]["scorer_autoscaling"] == scorer
    assert app["args"]["ingress_autoscaling"] == deployments["ProbeIngress"]["autoscaling_config"]
    assert deployments["ProbeScorer"]["ray_actor_options"] == {"num_cpus": app["args"]["scorer_num_cpus"]}


def _deployments(app: Application) -> list:
    """An application's deployments: its ingress and those bound into its init args."""
    root = app._bound_deployment
    nested = [arg for arg in root.init_args if isinstance(arg, Application)]
    return [root] + [d for arg in nested for d in _deployments(arg)]


def test_serve_config_matches_the_apps_its_args_build(kit, rendered, monkeypatch) -> None:
    """Serve refuses config deployments an app lacks; the code's options must equal the config's."""
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # the audit builder publishes no base here
    apps_seen = set()
    for values_file in CI_VALUES:
        service = kit.one(rendered(kit.load_values(values_file)), "RayService")
        for app in yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]:
            module, builder = app["import_path"].split(":")
            built = {
                d.name: d
                for d in _deployments(getattr(importlib.import_module(module), builder)(app["args"]))
            }
            configured = {d["name"]: d for d in app["deployments"]}
            assert set(built) == set(configured)
            apps_seen.add(module)
            for name, deployment in built.items():
                scaling = deployment._deployment_config.autoscaling_config
                for key, value in configured[name]["autoscaling_config"].items():
                    assert getattr(scaling, key) == value, (values_file.name, name, key)
                # Serve takes a config's ray_actor_options whole: the memory reservation is the config's.
                options = configured[name]["ray_actor_options"]
                assert deployment.ray_actor_options == {k: v for k, v in options.items() if k != "memory"}
                assert deployment.max_ongoing_requests == configured[name]["max_ongoing_requests"]
    assert apps_seen == {"services.probe_service.app_builder", "services.audit_service.app_builder"}


def test_the_audit_service_is_a_second_serve_app_on_grown_worker_pods(kit, rendered) -> None:
    from services.audit_service.app_builder import settings_from_args

    service = kit.one(rendered(kit.load_values(CHART / "ci" / "audit-values.yaml")), "RayService")
    serve = yaml.safe_load(service["spec"]["serveConfigV2"])
    probe, audit = serve["applications"]
    assert (probe["route_prefix"], audit["route_prefix"]) == ("/", "/audit")
    assert (audit["name"], audit["import_path"]) == (
        "audit-service",
        "services.audit_service.app_builder:build_app",
    )
    (scorer,) = audit["deployments"]
    assert scorer["name"] == "AuditScorer"
    assert scorer["ray_actor_options"] == {"num_cpus": 1, "memory": 1610612736}
    assert scorer["autoscaling_config"] == audit["args"]["autoscaling"]
    assert (
        scorer["autoscaling_config"]["max_replicas"],
        scorer["autoscaling_config"]["downscale_delay_s"],
    ) == (3, 60)
    settings = settings_from_args(audit["args"])
    assert (settings.app_name, settings.route_prefix, settings.models) == (
        "audit-service",
        "/audit",
        ("smollm2-135m",),
    )
    canaries = settings.canaries
    assert (canaries.size, canaries.seed, canaries.max_seq_len, canaries.batch_size) == (32, 11, 96, 8)
    assert (settings.num_cpus, settings.batch_max_size, settings.max_body_bytes) == (1, 8, 67108864)
    (workers,) = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    (container,) = workers["template"]["spec"]["containers"]
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "6Gi", "ephemeral-storage": "6Gi"}
    # Without the audit: one app, the probe's own pod size, no audit settings anywhere.
    objects = rendered()
    (app,) = yaml.safe_load(kit.one(objects, "RayService")["spec"]["serveConfigV2"])["applications"]
    assert app["name"] == "probe-service"
    (workers,) = kit.one(objects, "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert workers["template"]["spec"]["containers"][0]["resources"]["limits"] == {
        "cpu": "2",
        "memory": "3Gi",
        "ephemeral-storage": "6Gi",
    }
    assert [k for k in kit.one(objects, "ConfigMap")["data"] if k.startswith("SAFE_FEDLLM_AUDIT")] == []


def test_audit_level_settings_reach_the_aggregator(kit, rendered, monkeypatch) -> None:
    from services.aggregator.defenses.audit_level import AuditLevelSettings
    from services.aggregator.settings import AggregatorSettings
    from services.audit_service.settings import AuditServiceSettings

    data = kit.one(rendered(kit.load_values(CHART / "ci" / "audit-values.yaml")), "ConfigMap")["data"]
    for name in [n for n in os.environ if n.startswith("SAFE_FEDLLM_")]:
        monkeypatch.delenv(name)
    for name, value in data.items():
        monkeypatch.setenv(name, value)
    level = AuditLevelSettings()
    assert AggregatorSettings().defense == "audit+shadow"
    assert level.url == AUDIT_URL
    assert (level.threshold, level.flagged_factor, level.trust_combination) == (0.35, 0.25, "product")
    assert (level.scoring.timeout_s, level.scoring.attempts, level.scoring.backoff_s) == (90, 3, 2)
    assert level.aggregate_threshold == 0.05
    # The Ray pods read the same ConfigMap: the level's variables do not leak into the service's settings.
    assert AuditServiceSettings().app_name == "audit-service"


def test_cross_checks_catch_an_audit_url_off_its_route_or_policy(kit, rendered) -> None:
    values = kit.load_values(CHART / "ci" / "audit-values.yaml")
    objects = rendered(values)
    assert kit.reference_errors(objects, values) == []
    kit.one(objects, "ConfigMap")["data"]["SAFE_FEDLLM_AUDIT_LEVEL_URL"] = AUDIT_URL + "s"
    (policy,) = [
        p for p in kit.by_kind(objects, "NetworkPolicy") if p["metadata"]["name"] == "fl-safe-fedllm-probe"
    ]
    # Drop the rule that lets the aggregator reach Serve's port: both routes are cut off.
    policy["spec"]["ingress"] = [
        r for r in policy["spec"]["ingress"] if r.get("ports") != [{"port": 8000, "protocol": "TCP"}]
    ]
    errors = kit.reference_errors(objects, values)
    pods = ["RayService/fl-safe-fedllm-probe/head", "RayService/fl-safe-fedllm-probe/probe"]
    assert errors == [
        *[f"{pod}: NetworkPolicy keeps the aggregator from the probe URL's port 8000" for pod in pods],
        "audit URL path '/audits' is not its Serve route '/audit'",
        *[f"{pod}: NetworkPolicy keeps the aggregator from the audit URL's port 8000" for pod in pods],
    ]


def test_redis_is_persistent_with_aof_and_a_secret_password(kit, rendered) -> None:
    objects = rendered()
    redis = kit.one(objects, "StatefulSet")
    container = redis["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--appendfsync") + 1] == "always"
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/data"}
    (secret,) = [s for s in kit.by_kind(objects, "Secret") if s["metadata"]["name"] == "fl-safe-fedllm-redis"]
    assert len(secret["data"]["redis-password"]) > 40  # generated: 40 random characters, base64


def test_external_redis_url_comes_from_the_named_secret(kit, rendered) -> None:
    objects = rendered(kit.load_values(CHART / "ci" / "external-redis-values.yaml"))
    assert kit.by_kind(objects, "StatefulSet") == []
    env = {
        e["name"]: e
        for e in kit.one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["SAFE_FEDLLM_REDIS_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "managed-redis", "key": "url"}
    }


def test_no_value_is_missing_in_any_rendering(kit) -> None:
    for values_file in CI_VALUES:
        files = kit.chart().render(kit.load_values(values_file), name=kit.release, namespace=kit.namespace)
        for name, text in files.items():
            assert "<no value>" not in text, f"{values_file.name}: {name}"


def test_configmap_is_what_the_services_read(kit, rendered, monkeypatch) -> None:
    """The ConfigMap's SAFE_FEDLLM_* variables load into the services' own settings classes."""
    from services.aggregator.settings import AggregatorSettings
    from services.probe_service.settings import ProbeServiceSettings
    from shared.config import RuntimeSettings

    values = kit.load_values(CHART / "ci" / "all-features-values.yaml")
    data = kit.one(rendered(values), "ConfigMap")["data"]
    for name in [n for n in os.environ if n.startswith("SAFE_FEDLLM_")]:
        monkeypatch.delenv(name)
    for name, value in data.items():
        monkeypatch.setenv(name, value)
    aggregator, probe, runtime = AggregatorSettings(), ProbeServiceSettings(), RuntimeSettings()
    assert (aggregator.defense, aggregator.namespace, aggregator.probe_id) == (
        "audit+evidence",
        "sfl",
        "smollm2-135m-qv-r8",
    )
    assert aggregator.probe_url == "http://fl-safe-fedllm-probe-serve-svc.federation.svc:8000"
    assert (aggregator.federation.num_rounds, aggregator.federation.clients_per_round) == (10, 4)
    assert aggregator.scoring.timeout_s == 20
    assert (aggregator.registration, aggregator.open_registration_limit) == ("open", 5)
    assert aggregator.open_registration_window_s == 120
    assert str(probe.artifacts_dir) == "/var/lib/safe-fedllm/probes"
    assert str(runtime.cache_dir) == "/var/cache/safe-fedllm"
    assert data["SAFE_FEDLLM_AUDIT_LEVEL_URL"] == AUDIT_URL


def test_enrollment_tokens_and_admin_token_reach_the_aggregator(kit, rendered, monkeypatch) -> None:
    from services.aggregator.settings import AggregatorSettings

    tokens = ["enroll-0123456789abcdef", "enroll-fedcba9876543210"]
    values = {
        "aggregator": {"auth": {"enrollmentTokens": tokens, "adminToken": "operator-token-0123456789abc"}}
    }
    objects = rendered(values)
    (secret,) = [s for s in kit.by_kind(objects, "Secret") if s["metadata"]["name"] == "fl-safe-fedllm-auth"]
    env = kit.one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    for variable in env:
        ref = variable.get("valueFrom", {}).get("secretKeyRef", {})
        if ref.get("name") == "fl-safe-fedllm-auth":
            monkeypatch.setenv(variable["name"], base64.b64decode(secret["data"][ref["key"]]).decode())
    settings = AggregatorSettings()
    assert settings.enrollment_tokens == tokens
    assert settings.admin_token == "operator-token-0123456789abc"


def test_schema_accepts_only_defenses_the_aggregator_knows() -> None:
    from services.aggregator.defenses import DEFENSES
    from services.aggregator.strategies import STRATEGIES

    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    accepted = schema["properties"]["aggregator"]["properties"]["defense"]["enum"]
    # Every name the chart accepts is one the aggregator knows; the four Safe-FedLLM levels are all accepted.
    assert set(accepted) <= set(DEFENSES) | set(STRATEGIES)
    assert {"step", "client", "shadow", "evidence"} <= set(accepted)


def test_every_leaf_value_is_documented() -> None:
    """values.yaml: a leaf key has a comment right above it, or its parent key has (flow maps, contexts)."""
    undocumented, stack = [], []  # stack: (indent, key, documented)
    previous = ""
    for line in (CHART / "values.yaml").read_text().splitlines():
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):(.*)$", line)
        if match:
            indent, key, rest = len(match[1]), match[2], match[3].strip()
            while stack and stack[-1][0] >= indent:
                stack.pop()
            documented = previous.lstrip().startswith("#")
            is_leaf = rest != "" and not rest.startswith("#")
            if is_leaf and not documented and not (stack and stack[-1][2]):
                undocumented.append(".".join([k for _, k, _ in stack] + [key]))
            stack.append((indent, key, documented))
        if line.strip():
            previous = line
    assert undocumented == []


@pytest.mark.parametrize("values_file", [None, "audit-values.yaml", "all-features-values.yaml"])
def test_every_shipped_configuration_passes_the_aggregator_s_start_up_checks(
    kit, rendered, monkeypatch, values_file
) -> None:
    """The default is the verified level (no trusted execution needed); a shadow-based level must say
    trustedExecution, or the aggregator refuses to start (docs/threat_model.md)."""
    from services.aggregator.settings import AggregatorSettings

    values = kit.load_values(CHART / "ci" / values_file) if values_file else {}
    data = kit.one(rendered(values), "ConfigMap")["data"]
    for name in [n for n in os.environ if n.startswith("SAFE_FEDLLM_")]:
        monkeypatch.delenv(name)
    for name, value in data.items():
        monkeypatch.setenv(name, value)
    settings = AggregatorSettings()
    settings.validate_defense()
    assert (settings.defense, settings.trusted_execution) == {
        None: ("verified", False),
        "audit-values.yaml": ("audit+shadow", True),
        "all-features-values.yaml": ("audit+evidence", True),
    }[values_file]
    monkeypatch.setenv("SAFE_FEDLLM_AGGREGATOR_TRUSTED_EXECUTION", "false")
    if values_file:
        with pytest.raises(ValueError, match="only under trusted execution"):
            AggregatorSettings().validate_defense()


def test_realignment_values_reach_the_aggregator_and_default_to_its_settings(
    kit, rendered, monkeypatch
) -> None:
    from services.aggregator.realignment import RealignmentSettings
    from services.aggregator.settings import AggregatorSettings

    values = kit.load_values(CHART / "values.yaml")
    data = kit.one(rendered(values), "ConfigMap")["data"]
    defaults = RealignmentSettings()
    chart = values["aggregator"]["realignment"]
    assert (chart["enabled"], chart["steps"], chart["lr"]) == (defaults.enabled, defaults.steps, defaults.lr)
    assert (chart["refusalsPerBatch"], chart["helpfulPerBatch"]) == (
        defaults.refusals_per_batch,
        defaults.helpful_per_batch,
    )
    values["aggregator"]["realignment"].update(enabled=True, steps=30, lr=1e-4)
    data = kit.one(rendered(values), "ConfigMap")["data"]
    for name in [n for n in os.environ if n.startswith("SAFE_FEDLLM_")]:
        monkeypatch.delenv(name)
    for name, value in data.items():
        monkeypatch.setenv(name, value)
    realignment = AggregatorSettings().realignment
    assert (realignment.enabled, realignment.steps, realignment.lr) == (True, 30, 1e-4)


# Where the chart's default deliberately differs from the settings model's, and why (nothing else may).
CHART_OVERRIDES: dict[str, str] = {
    "namespace": "the chart names the federation after the release",
    "probe_url": "in the cluster the aggregator scores through the probe service's URL",
    "admin_token": "from the chart's Secret",
    "enrollment_tokens": "from the chart's Secret",
    "expose_docs": "the production profile closes /docs (values.yaml aggregator.exposeDocs)",
}


def _settings_from(data: dict[str, str], monkeypatch: pytest.MonkeyPatch, build: Callable[[], Any]) -> Any:
    for name in [n for n in os.environ if n.startswith("SAFE_FEDLLM_")]:
        monkeypatch.delenv(name)
    for name, value in data.items():
        monkeypatch.setenv(name, value)
    return build()


def test_the_charts_aggregator_defaults_are_the_settings_models_defaults(kit, rendered, monkeypatch) -> None:
    """One source per default: the default values render to exactly the settings a bare
    AggregatorSettings() / AuditLevelSettings() has, but for the overrides listed with their reason."""
    from services.aggregator.defenses import AuditLevelSettings
    from services.aggregator.settings import AggregatorSettings

    data = kit.one(rendered(None), "ConfigMap")["data"]
    assert "SAFE_FEDLLM_AGGREGATOR_DEFENSE" in data
    charted = _settings_from(data, monkeypatch, AggregatorSettings).model_dump()
    bare = _settings_from({}, monkeypatch, AggregatorSettings).model_dump()
    differing = {k for k in bare if charted[k] != bare[k]}
    assert differing <= set(CHART_OVERRIDES), {
        k: (charted[k], bare[k]) for k in differing - set(CHART_OVERRIDES)
    }
    values = kit.load_values(CHART / "values.yaml")  # the audit level's settings render only under one
    values["audit"]["enabled"] = True
    values["aggregator"].update(defense="audit+shadow", trustedExecution=True)
    data = kit.one(rendered(values), "ConfigMap")["data"]
    assert "SAFE_FEDLLM_AUDIT_LEVEL_THRESHOLD" in data
    audit = _settings_from(data, monkeypatch, AuditLevelSettings).model_dump()
    bare_audit = _settings_from({}, monkeypatch, AuditLevelSettings).model_dump()
    ignored = {"url"}  # the in-cluster audit service's address
    assert {k: v for k, v in audit.items() if k not in ignored} == {
        k: v for k, v in bare_audit.items() if k not in ignored
    }


def test_the_chart_readme_is_generated_from_the_values_comments() -> None:
    """helm/safe-fedllm/README.md lists every `# --` documented value with its default, and is current."""
    import subprocess
    import sys

    script = CHART.parents[1] / "scripts" / "chart_readme.py"
    check = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    values = (CHART / "values.yaml").read_text(encoding="utf-8")
    assert (
        readme.count("\n| `") == values.count("# --") and '| `aggregator.defense` | `"verified"` |' in readme
    )
