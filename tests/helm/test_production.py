"""What a platform team checks before signing off (issue #26): Ray's control plane closed, Redis that survives
production, secrets that stay put, budgets that protect something, the HA profile, `helm test`, true NOTES."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "safe-fedllm"
LOCK = Path(__file__).resolve().parents[2] / "requirements.lock"
HA = CHART / "ci" / "ha-values.yaml"
ALL = CHART / "ci" / "all-features-values.yaml"


def _pod(kit, objects, owner: str) -> tuple[dict, dict]:
    (match,) = [(labels, spec) for name, labels, spec in kit.pod_templates(objects) if name == owner]
    return match


def _lock_version(package: str) -> str:
    match = re.search(rf"^{package}==(\S+)$", LOCK.read_text(), re.M)
    assert match, f"{package} missing from requirements.lock"
    return match[1]


def test_ray_version_is_the_images_ray(kit, rendered) -> None:
    cluster = kit.one(rendered(), "RayService")["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == _lock_version("ray")


def test_ray_control_plane_needs_a_token_and_pods_carry_no_api_token(kit, rendered) -> None:
    objects = rendered()
    cluster = kit.one(objects, "RayService")["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token"}
    _, head = _pod(kit, objects, "RayService/fl-safe-fedllm-probe/head")
    _, worker = _pod(kit, objects, "RayService/fl-safe-fedllm-probe/probe")
    # The head keeps a token only for the in-tree autoscaler (KubeRay's own ServiceAccount); workers never.
    assert (head["automountServiceAccountToken"], worker["automountServiceAccountToken"]) == (True, False)
    for _, _, spec in kit.pod_templates(objects):
        if spec is not head:
            assert spec["automountServiceAccountToken"] is False
    values = {"probeService": {"rayAuth": {"mode": "disabled"}, "rayAutoscaler": {"enabled": False}}}
    values["probeService"]["workers"] = {"replicas": 2, "minReplicas": 2, "maxReplicas": 2}
    objects = rendered(values)
    assert "authOptions" not in kit.one(objects, "RayService")["spec"]["rayClusterConfig"]
    _, head = _pod(kit, objects, "RayService/fl-safe-fedllm-probe/head")
    assert head["automountServiceAccountToken"] is False


@pytest.mark.parametrize("group", ["head", "probe"])
def test_ray_session_dir_is_a_bounded_empty_dir_within_ephemeral_limits(kit, rendered, group: str) -> None:
    _, spec = _pod(kit, rendered(), f"RayService/fl-safe-fedllm-probe/{group}")
    (container,) = spec["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    tmp = volumes[mounts["/tmp/ray"]]
    assert tmp["emptyDir"] == {"sizeLimit": "4Gi"}
    resources = container["resources"]
    assert kit.memory_bytes(resources["requests"]["ephemeral-storage"]) == 2**30
    limit = kit.memory_bytes(resources["limits"]["ephemeral-storage"])
    assert limit > kit.memory_bytes(tmp["emptyDir"]["sizeLimit"])


def test_redis_is_patched_bounded_and_not_killed_while_loading(kit, rendered) -> None:
    redis = kit.one(rendered(), "StatefulSet")
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    version = re.match(r"(\d+)\.(\d+)\.(\d+)", container["image"].split(":")[1])
    assert version and tuple(map(int, version.groups())) >= (7, 4, 6), container["image"]
    args = container["args"]
    # 0.75 x the 1 GiB limit, in bytes; noeviction: state is never silently dropped.
    assert args[args.index("--maxmemory") + 1] == str(int(0.75 * 2**30))
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert container["resources"]["limits"]["memory"] == "1Gi"
    startup, liveness = container["startupProbe"], container["livenessProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == 3600
    assert "PONG" in startup["exec"]["command"][-1] and "LOADING" not in startup["exec"]["command"][-1]
    assert "grep -qE 'PONG|LOADING'" in liveness["exec"]["command"][-1]
    assert "initialDelaySeconds" not in liveness
    limited = rendered({"redis": {"maxmemoryRatio": 0.5, "resources": {"limits": {"memory": "1500Mi"}}}})
    args = kit.one(limited, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--maxmemory") + 1] == str(750 * 2**20)


def test_aggregator_readiness_checks_the_store(kit, rendered) -> None:
    _, spec = _pod(kit, rendered(), "Deployment/fl-safe-fedllm-aggregator")
    (container,) = spec["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_docs_metrics_and_retention_options_reach_the_aggregator(kit, rendered, monkeypatch) -> None:
    from services.aggregator.settings import AggregatorSettings

    assert "SAFE_FEDLLM_AGGREGATOR_RETAIN_ROUNDS" not in kit.one(rendered(), "ConfigMap")["data"]
    values = {"aggregator": {"exposeDocs": False, "retainRounds": 5}}
    data = kit.one(rendered(values), "ConfigMap")["data"]
    for name, value in data.items():
        if name.startswith(("SAFE_FEDLLM_AGGREGATOR_EXPOSE", "SAFE_FEDLLM_AGGREGATOR_RETAIN")):
            monkeypatch.setenv(name, value)
    settings = AggregatorSettings()
    assert (settings.expose_docs, settings.expose_metrics, settings.retain_rounds) == (False, True, 5)


def _secret(kit, objects, name: str) -> dict:
    (secret,) = [s for s in kit.by_kind(objects, "Secret") if s["metadata"]["name"] == name]
    return secret


def test_generated_secrets_are_kept_and_do_not_roll_the_aggregator(kit) -> None:
    def render() -> list[dict]:
        files = kit.chart().render({}, name=kit.release, namespace=kit.namespace, is_install=True)
        texts = [text for name, text in files.items() if not name.endswith("NOTES.txt")]
        return [doc for text in texts for doc in yaml.safe_load_all(text) if doc]

    first, second = render(), render()
    for name in ("fl-safe-fedllm-auth", "fl-safe-fedllm-redis"):
        assert _secret(kit, first, name)["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    # No cluster to look up: each render generates another password, yet the pods' checksum stays the same.
    redis = [_secret(kit, o, "fl-safe-fedllm-redis")["data"]["redis-password"] for o in (first, second)]
    assert redis[0] != redis[1]
    checksums = [
        kit.one(o, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/secrets"]
        for o in (first, second)
    ]
    assert checksums[0] == checksums[1]
    # A value the operator sets does roll them.
    changed = kit.chart().render(
        {"redis": {"password": "another-password-0123456789"}}, name=kit.release, namespace=kit.namespace
    )
    deployment = yaml.safe_load(changed["safe-fedllm/templates/aggregator.yaml"].split("\n---\n")[0])
    assert deployment["spec"]["template"]["metadata"]["annotations"]["checksum/secrets"] != checksums[0]


def test_gitops_mode_renders_with_given_secrets(kit, rendered) -> None:
    values = {
        "generateSecrets": False,
        "aggregator": {"auth": {"adminToken": "operator-token-0123456789abcdef"}},
        "redis": {"password": "redis-password-0123456789"},
    }
    objects = rendered(values)
    secret = _secret(kit, objects, "fl-safe-fedllm-redis")
    assert base64.b64decode(secret["data"]["redis-password"]) == b"redis-password-0123456789"
    # Existing Secrets need nothing generated either.
    external = {"generateSecrets": False, "aggregator": {"auth": {"existingSecret": "ops-auth"}}}
    external["redis"] = {"existingSecret": "ops-redis"}
    assert not [s for s in kit.by_kind(rendered(external), "Secret")]


def test_budgets_render_only_where_they_protect_something(kit, rendered) -> None:
    assert kit.by_kind(rendered(), "PodDisruptionBudget") == []
    objects = rendered(kit.load_values(HA))
    budgets = {p["metadata"]["name"]: p for p in kit.by_kind(objects, "PodDisruptionBudget")}
    assert set(budgets) == {"fl-safe-fedllm-aggregator", "fl-safe-fedllm-probe-workers"}
    pods = list(kit.pod_templates(objects))
    covered = {
        name: [o for o, labels, _ in pods if kit.selects(pdb["spec"]["selector"]["matchLabels"], labels)]
        for name, pdb in budgets.items()
    }
    assert covered == {
        "fl-safe-fedllm-aggregator": ["Deployment/fl-safe-fedllm-aggregator"],
        "fl-safe-fedllm-probe-workers": ["RayService/fl-safe-fedllm-probe/probe"],
    }
    assert kit.one(objects, "Deployment")["spec"]["replicas"] == 2
    (workers,) = kit.one(objects, "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert workers["minReplicas"] == 2  # more than the budget's maxUnavailable of 1


def test_ha_profile_spreads_pods_and_keeps_gcs_state_in_the_charts_redis(kit, rendered) -> None:
    objects = rendered(kit.load_values(HA))
    service = kit.one(objects, "RayService")
    cluster = service["spec"]["rayClusterConfig"]
    gcs = cluster["gcsFaultToleranceOptions"]
    assert gcs["redisAddress"] == "fl-safe-fedllm-redis.federation.svc:6379"
    assert gcs["redisPassword"] == {
        "valueFrom": {"secretKeyRef": {"name": "fl-safe-fedllm-redis", "key": "redis-password"}}
    }
    host, port = gcs["redisAddress"].split(".")[0], int(gcs["redisAddress"].rsplit(":", 1)[1])
    redis_service = [s for s in kit.by_kind(objects, "Service") if s["metadata"]["name"] == host]
    assert redis_service and port in {p["port"] for p in redis_service[0]["spec"]["ports"]}
    head_labels, _ = _pod(kit, objects, "RayService/fl-safe-fedllm-probe/head")
    redis_labels, _ = _pod(kit, objects, "StatefulSet/fl-safe-fedllm-redis")
    assert kit.ingress_allowed(objects, head_labels, redis_labels, 6379)
    assert not kit.ingress_allowed(rendered(), head_labels, redis_labels, 6379)  # only with GCS FT
    for owner in ("Deployment/fl-safe-fedllm-aggregator", "RayService/fl-safe-fedllm-probe/probe"):
        _, spec = _pod(kit, objects, owner)
        (spread,) = spec["topologySpreadConstraints"]
        assert (spread["topologyKey"], spread["maxSkew"], spread["whenUnsatisfiable"]) == (
            "kubernetes.io/hostname",
            1,
            "DoNotSchedule",
        )
        selected = [o for o, pod_labels, _ in kit.pod_templates(objects)
                    if kit.selects(spread["labelSelector"]["matchLabels"], pod_labels)]  # fmt: skip
        assert selected == [owner]
    serve = yaml.safe_load(service["spec"]["serveConfigV2"])
    scaling = {d["name"]: d["autoscaling_config"] for d in serve["applications"][0]["deployments"]}
    assert (scaling["ProbeScorer"]["min_replicas"], scaling["ProbeIngress"]["min_replicas"]) == (2, 2)


@pytest.mark.parametrize("values_file", [None, ALL], ids=["defaults", "all-features"])
def test_helm_test_pod_checks_both_services_and_may_reach_them(kit, rendered, values_file) -> None:
    objects = rendered(kit.load_values(values_file) if values_file else None)
    pod = kit.one(objects, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    urls = container["args"][1:]
    config = kit.one(objects, "ConfigMap")["data"]
    service = kit.one(objects, "Deployment")["metadata"]["name"]
    (svc,) = [s for s in kit.by_kind(objects, "Service") if s["metadata"]["name"] == service]
    (port,) = svc["spec"]["ports"]
    assert urls == [
        f"http://{service}.federation.svc:{port['port']}/readyz",
        config["SAFE_FEDLLM_AGGREGATOR_PROBE_URL"] + "/readyz",
    ]
    labels = pod["metadata"]["labels"]
    aggregator_labels, _ = _pod(kit, objects, "Deployment/fl-safe-fedllm-aggregator")
    worker_labels, _ = _pod(kit, objects, "RayService/fl-safe-fedllm-probe/probe")
    assert kit.ingress_allowed(objects, labels, aggregator_labels, 8080)
    assert kit.ingress_allowed(objects, labels, worker_labels, 8000)
    assert not kit.ingress_allowed(objects, labels, worker_labels, 8265)  # not the dashboard


def test_helm_test_script_fails_on_an_unready_service(kit, rendered, free_port) -> None:
    """The test pod's own script, run here against a real HTTP server answering 200 and 503."""
    import http.server
    import subprocess
    import sys
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/ready" else 503)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    (container,) = kit.one(rendered(), "Pod")["spec"]["containers"]
    script = container["args"][0]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        run = [sys.executable, "-c", script]
        ok = subprocess.run([*run, f"{base}/ready", f"{base}/ready"], capture_output=True, timeout=60)
        bad = subprocess.run([*run, f"{base}/ready", f"{base}/down"], capture_output=True, timeout=60)
    finally:
        server.shutdown()
    assert (ok.returncode, bad.returncode) == (0, 1)


def test_notes_say_what_the_release_runs(kit) -> None:
    def notes(values: dict) -> str:
        files = kit.chart().render(values, name=kit.release, namespace=kit.namespace, is_install=True)
        return next(text for name, text in files.items() if name.endswith("NOTES.txt"))

    default = notes({})
    assert "helm test fl -n federation" in default
    assert "ProbeScorer replicas scale between 1 and 4" in default
    assert "0 enrollment token(s)" in default
    assert "Ray token authentication is on" in default
    # An existing Secret's tokens are the operator's: the NOTES do not count the chart's (empty) list.
    operator = notes(kit.load_values(ALL))
    assert "enrollment token" not in operator and "registration: open" in operator
    ingress = notes({"probeService": {"scoreInIngress": True}})
    assert "Scores are computed on the ProbeIngress replicas (1 to 2)" in ingress


def test_probe_scoring_runs_on_the_scaled_deployment_by_default(kit, rendered) -> None:
    serve = yaml.safe_load(kit.one(rendered(), "RayService")["spec"]["serveConfigV2"])
    assert serve["applications"][0]["args"]["score_in_ingress"] is False
