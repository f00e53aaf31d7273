"""Offline proof of the Helm chart: a real Helm engine renders it; every object is checked against a schema.

Kubernetes kinds go to kubernetes-validate (strict, two Kubernetes versions), ray.io kinds to the KubeRay
operator's own CRD schemas (../shared/kuberay/), ServiceMonitor to a schema of the fields the chart writes
(the Prometheus Operator's CRDs are not available offline). A kind with no schema is a failure, never a pass.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "safe-fedllm"
KUBERAY_CRDS = REPO_ROOT.parent / "shared" / "kuberay"
MUTATIONS_DIR = Path(__file__).parent / "mutations"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest kubernetes-validate ships.
KUBE_VERSIONS = ("1.27.0", "1.37.0")
RELEASE, NAMESPACE = "fl", "federation"

Manifest = dict[str, Any]


def ci_values_files() -> list[Path]:
    return sorted((CHART_DIR / "ci").glob("*-values.yaml"))


def load_values(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


@cache
def chart() -> helm_python.Chart:
    return helm_python.Chart.load(CHART_DIR)


def render(values: dict[str, Any] | None = None) -> list[Manifest]:
    """The chart's objects for these values (schema-checked by Helm itself); NOTES.txt is not YAML."""
    files = chart().render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = []
    for name, text in sorted(files.items()):
        if name.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def by_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# --- KubeRay CRDs -> strict JSON schemas ---


def _strict_openapi(node: Any) -> Any:
    """OpenAPI v3 (structural CRD schema) -> JSON Schema: nullable, int-or-string, unknown fields refused."""
    if isinstance(node, list):
        return [_strict_openapi(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict_openapi(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def crd_validator(kind: str, api_version: str) -> jsonschema.Draft7Validator:
    plural = {"RayService": "rayservices", "RayJob": "rayjobs", "RayCluster": "rayclusters"}[kind]
    path = KUBERAY_CRDS / f"ray.io_{plural}.yaml"
    if not path.exists():
        pytest.fail(f"KubeRay CRD {path} missing: the RayService cannot be validated without it")
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    group, version = api_version.split("/")
    assert crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = _strict_openapi(served["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


# ServiceMonitor: only the fields the chart writes, each typed; anything else is refused.
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port", "path"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        },
                    },
                },
            },
        },
    },
}


def schema_errors(obj: Manifest) -> list[str]:
    """Every schema violation of one rendered object, for every Kubernetes version; unknown kinds fail."""
    kind, api_version = obj["kind"], obj["apiVersion"]
    where = f"{kind}/{obj['metadata']['name']}"
    if api_version.startswith("ray.io/"):
        errors = crd_validator(kind, api_version).iter_errors(obj)
        return [f"{where}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]
    if api_version == "monitoring.coreos.com/v1" and kind == "ServiceMonitor":
        errors = jsonschema.Draft7Validator(SERVICE_MONITOR_SCHEMA).iter_errors(obj)
        return [f"{where}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]
    out = []
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(copy.deepcopy(obj), version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            out.append(f"{where}: no schema for {api_version} {kind} in Kubernetes {version}")
        except kubernetes_validate.ValidationError as error:
            path = "/".join(map(str, error.absolute_path))
            out.append(f"{where} (Kubernetes {version}): {path}: {error.message}")
    return out


# --- pods: the templates the chart's objects create ---


def pod_templates(objects: list[Manifest]) -> Iterator[tuple[str, dict[str, str], dict[str, Any]]]:
    """(owner, pod labels, pod spec) of every pod the chart makes, with KubeRay's labels to Ray pods."""
    for obj in objects:
        kind, name, spec = obj["kind"], obj["metadata"]["name"], obj.get("spec", {})
        if kind in ("Deployment", "StatefulSet"):
            template = copy.deepcopy(spec["template"])
            # A StatefulSet's claim templates become volumes of its pods.
            claims = [{"name": c["metadata"]["name"]} for c in spec.get("volumeClaimTemplates", [])]
            template["spec"]["volumes"] = template["spec"].get("volumes", []) + claims
            yield f"{kind}/{name}", template["metadata"].get("labels", {}), template["spec"]
        elif kind == "Pod":  # the `helm test` hook
            yield f"{kind}/{name}", obj["metadata"].get("labels", {}), spec
        elif kind in ("RayService", "RayJob"):
            cluster = spec["rayClusterConfig"] if kind == "RayService" else spec["rayClusterSpec"]
            head = cluster["headGroupSpec"]["template"]
            yield (
                f"{kind}/{name}/head",
                {**head["metadata"].get("labels", {}), "ray.io/node-type": "head"},
                head["spec"],
            )
            for group in cluster.get("workerGroupSpecs", []):
                template = group["template"]
                labels = {**template["metadata"].get("labels", {}), "ray.io/node-type": "worker"}
                yield f"{kind}/{name}/{group['groupName']}", labels, template["spec"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def container_ports(pod_spec: dict[str, Any]) -> dict[str, int]:
    return {p.get("name", str(p["containerPort"])): p["containerPort"] for c in pod_spec["containers"]
            for p in c.get("ports", [])}  # fmt: skip


@pytest.fixture(scope="session")
def rendered() -> Callable[[dict[str, Any] | None], list[Manifest]]:
    memo: dict[str, list[Manifest]] = {}

    def _render(values: dict[str, Any] | None = None) -> list[Manifest]:
        key = json.dumps(values or {}, sort_keys=True)
        if key not in memo:
            memo[key] = render(values)
        return copy.deepcopy(memo[key])

    return _render


# --- the operator's own rules (KubeRay validation.go) that its CRD schema cannot express ---

MAX_RAY_NAME = 47  # KubeRay: 63 - len("-serve-svc") - 6 characters of the generated RayCluster suffix
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def kuberay_rule_errors(obj: Manifest) -> list[str]:
    if obj["kind"] not in ("RayService", "RayJob"):
        return []
    name, spec = obj["metadata"]["name"], obj["spec"]
    where = f"{obj['kind']}/{name}"
    errors = []
    if len(name) > MAX_RAY_NAME:
        errors.append(f"{where}: name longer than {MAX_RAY_NAME} characters")
    if not DNS1035.match(name):
        errors.append(f"{where}: name is not a DNS-1035 label")
    cluster = spec.get("rayClusterConfig") if obj["kind"] == "RayService" else spec.get("rayClusterSpec")
    if cluster is None:
        return [*errors, f"{where}: no Ray cluster spec"]
    autoscaling = bool(cluster.get("enableInTreeAutoscaling"))
    groups = [("head", cluster["headGroupSpec"])] + [
        (g["groupName"], g) for g in cluster.get("workerGroupSpecs", [])
    ]
    for group_name, group in groups:
        if not group["template"]["spec"].get("containers"):
            errors.append(f"{where}: group {group_name} has no container")
        start = group.get("rayStartParams", {})
        if group.get("resources") and any(
            start.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")
        ):
            errors.append(f"{where}: group {group_name} sets resources in rayStartParams and resources")
        if "labels" in start:
            errors.append(f"{where}: group {group_name}: rayStartParams['labels'] is not supported")
        if group_name == "head":
            continue
        low, high, replicas = group.get("minReplicas"), group.get("maxReplicas"), group.get("replicas")
        if not autoscaling and (low is None or high is None):
            errors.append(
                f"{where}: group {group_name} needs minReplicas and maxReplicas without autoscaling"
            )
        if low is not None and high is not None and low > high:
            errors.append(
                f"{where}: group {group_name} has minReplicas {low} greater than maxReplicas {high}"
            )
        if replicas is not None and low is not None and high is not None and not low <= replicas <= high:
            errors.append(f"{where}: group {group_name} replicas {replicas} outside [{low}, {high}]")
    if obj["kind"] == "RayJob":
        if spec.get("suspend") and not spec.get("shutdownAfterJobFinishes"):
            errors.append(f"{where}: suspend needs shutdownAfterJobFinishes")
        if spec.get("ttlSecondsAfterFinished", 0) < 0:
            errors.append(f"{where}: negative ttlSecondsAfterFinished")
    return errors


# --- serveConfigV2: Ray Serve's own schema, made strict ---


def _unknown_keys(data: dict[str, Any], model: Any, where: str) -> list[str]:
    known = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
    return [f"{where}: unknown key {key!r}" for key in data if key not in known]


def serve_config_errors(obj: Manifest) -> list[str]:
    """ServeDeploySchema ignores unknown keys and leaves autoscaling_config a dict: check both strictly."""
    if obj["kind"] != "RayService":
        return []
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import (
        DeploymentSchema,
        RayActorOptionsSchema,
        ServeApplicationSchema,
        ServeDeploySchema,
    )

    where = f"RayService/{obj['metadata']['name']} serveConfigV2"
    config = yaml.safe_load(obj["spec"]["serveConfigV2"])
    try:
        ServeDeploySchema.model_validate(config)
    except ValueError as error:
        return [f"{where}: {error}"]
    errors = _unknown_keys(config, ServeDeploySchema, where)
    for app in config["applications"]:
        errors += _unknown_keys(app, ServeApplicationSchema, f"{where} app {app.get('name')}")
        for deployment in app.get("deployments", []):
            here = f"{where} deployment {deployment['name']}"
            errors += _unknown_keys(deployment, DeploymentSchema, here)
            try:
                if "autoscaling_config" in deployment:
                    scaling = deployment["autoscaling_config"]
                    errors += _unknown_keys(scaling, AutoscalingConfig, here)
                    AutoscalingConfig.model_validate(scaling)
                RayActorOptionsSchema.model_validate(deployment.get("ray_actor_options", {}))
            except ValueError as error:
                errors.append(f"{here}: {error}")
    return errors


# --- cross-object references ---


def _env(pod_spec: dict[str, Any], container: str) -> dict[str, Any]:
    (match,) = [c for c in pod_spec["containers"] if c["name"] == container]
    return {e["name"]: e for e in match.get("env", [])}


def _service_host_port(url: str) -> tuple[str, int]:
    parsed = urlsplit(url)
    return (parsed.hostname or "").split(".")[0], int(parsed.port or 0)


def cpu_count(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


_MEMORY_UNITS = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
}


def memory_bytes(quantity: str | int | float) -> float:
    """A Kubernetes memory quantity in bytes (the units the schema allows for memory)."""
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(quantity))
    assert match and match[2] in {"", *_MEMORY_UNITS}, f"not a memory quantity: {quantity}"
    return float(match[1]) * _MEMORY_UNITS.get(match[2], 1)


# Ray's defaults on a pod: 30% of the memory limit is its object store, the rest its schedulable `memory`.
RAY_OBJECT_STORE_SHARE = 0.3
# The largest base the chart deploys, SmolLM2-135M: ~134.5 M weights in float32, tied embeddings sent once.
SHARED_BASE_BYTES = 538_000_000


def reference_errors(objects: list[Manifest], values: dict[str, Any]) -> list[str]:
    """Selectors match labels, ports match container ports, URLs, Secrets and ConfigMaps name real objects."""
    errors: list[str] = []
    pods = list(pod_templates(objects))
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    merged = chart().merge_values(values)
    existing_secrets = {
        merged["aggregator"]["auth"]["existingSecret"],
        merged["redis"]["existingSecret"],
        merged["externalRedis"]["existingSecret"],
    } - {""}

    for obj in by_kind(objects, "Deployment") + by_kind(objects, "StatefulSet"):
        selector = obj["spec"]["selector"]["matchLabels"]
        if not selects(selector, obj["spec"]["template"]["metadata"]["labels"]):
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: selector does not match its pod labels")
    for obj in by_kind(objects, "StatefulSet"):
        if ("Service", obj["spec"]["serviceName"]) not in names:
            errors.append(f"StatefulSet/{obj['metadata']['name']}: serviceName names no Service")

    for svc in by_kind(objects, "Service"):
        where = f"Service/{svc['metadata']['name']}"
        matched = [p for p in pods if selects(svc["spec"].get("selector", {}), p[1])]
        if not matched:
            errors.append(f"{where}: selector matches no pod")
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for owner, _, spec in matched:
                ports = container_ports(spec)
                if target not in ports and target not in ports.values():
                    errors.append(f"{where}: targetPort {target} is no container port of {owner}")

    for pdb in by_kind(objects, "PodDisruptionBudget"):
        if not any(selects(pdb["spec"]["selector"]["matchLabels"], p[1]) for p in pods):
            errors.append(f"PodDisruptionBudget/{pdb['metadata']['name']}: selector matches no pod")

    for policy in by_kind(objects, "NetworkPolicy"):
        where = f"NetworkPolicy/{policy['metadata']['name']}"
        matched = [p for p in pods if selects(policy["spec"]["podSelector"]["matchLabels"], p[1])]
        if not matched:
            errors.append(f"{where}: podSelector matches no pod")
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                local = "podSelector" in peer and "namespaceSelector" not in peer
                if local and not any(selects(peer["podSelector"]["matchLabels"], p[1]) for p in pods):
                    errors.append(f"{where}: a peer podSelector matches no pod of the chart")
            for port in rule.get("ports", []):
                opened = [container_ports(spec) for _, _, spec in matched]
                if not any(port["port"] in ports or port["port"] in ports.values() for ports in opened):
                    errors.append(f"{where}: port {port['port']} is open on none of its pods")

    for monitor in by_kind(objects, "ServiceMonitor"):
        where = f"ServiceMonitor/{monitor['metadata']['name']}"
        wanted = monitor["spec"]["selector"]["matchLabels"]
        services = [
            s for s in by_kind(objects, "Service") if selects(wanted, s["metadata"].get("labels", {}))
        ]
        if not services:
            errors.append(f"{where}: selector matches no Service")
        for endpoint in monitor["spec"]["endpoints"]:
            for svc in services:
                if endpoint["port"] not in {p.get("name") for p in svc["spec"]["ports"]}:
                    errors.append(
                        f"{where}: port {endpoint['port']} is not a port name of {svc['metadata']['name']}"
                    )

    for owner, _, spec in pods:
        volumes = {v["name"] for v in spec.get("volumes", [])}
        account = spec.get("serviceAccountName")
        if account and ("ServiceAccount", account) not in names:
            errors.append(f"{owner}: serviceAccountName {account} names no ServiceAccount")
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    errors.append(f"{owner}: volumeMount {mount['name']} has no volume")
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef", {}).get("name")
                if ref and ("ConfigMap", ref) not in names:
                    errors.append(f"{owner}: envFrom names no ConfigMap {ref}")
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and ("Secret", ref["name"]) not in names and ref["name"] not in existing_secrets:
                    errors.append(
                        f"{owner}: env {env['name']} names Secret {ref['name']}, neither made nor given"
                    )
                if ref and ("Secret", ref["name"]) in names:
                    (secret,) = [
                        s for s in by_kind(objects, "Secret") if s["metadata"]["name"] == ref["name"]
                    ]
                    if ref["key"] not in secret.get("data", {}):
                        errors.append(f"{owner}: env {env['name']} names missing key {ref['key']}")

    errors += _service_url_errors(objects, merged)
    return errors


def ingress_allowed(
    objects: list[Manifest], source: dict[str, str], target: dict[str, str], port: int
) -> bool:
    """Whether the chart's NetworkPolicies let pods with `source` labels reach `target` pods on `port`."""
    policies = [
        p
        for p in by_kind(objects, "NetworkPolicy")
        if selects(p["spec"]["podSelector"]["matchLabels"], target)
    ]
    if not policies:
        return True  # a pod no policy selects accepts everything
    target_ports = {port} | {name for name, number in _ports_of(objects, target).items() if number == port}
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            peer_ok = peers is None or any(
                "podSelector" in peer
                and "namespaceSelector" not in peer
                and selects(peer["podSelector"]["matchLabels"], source)
                for peer in peers
            )
            ports = rule.get("ports")
            if peer_ok and (ports is None or any(p["port"] in target_ports for p in ports)):
                return True
    return False


def _ports_of(objects: list[Manifest], labels: dict[str, str]) -> dict[str, int]:
    return {
        name: number
        for _, pod_labels, spec in pod_templates(objects)
        if pod_labels == labels
        for name, number in container_ports(spec).items()
    }


def _serve_route_errors(objects: list[Manifest], url: str, what: str, route: str) -> list[str]:
    """`url` is KubeRay's Serve service, on Serve's port, open to the aggregator, at `route`."""
    errors = []
    service = one(objects, "RayService")
    serve = yaml.safe_load(service["spec"]["serveConfigV2"])
    host, port = _service_host_port(url)
    if host != f"{service['metadata']['name']}-serve-svc":
        errors.append(
            f"{what} URL host {host} is not KubeRay's Serve service of {service['metadata']['name']}"
        )
    if port != serve["http_options"]["port"]:
        errors.append(f"{what} URL port {port} is not Serve's port {serve['http_options']['port']}")
    if (urlsplit(url).path or "/") != route:
        errors.append(f"{what} URL path {urlsplit(url).path!r} is not its Serve route {route!r}")
    (aggregator,) = [labels for owner, labels, _ in pod_templates(objects) if owner.startswith("Deployment/")]
    for owner, labels, spec in pod_templates([service]):
        if container_ports(spec).get("serve") != port:
            errors.append(f"{owner}: no container port 'serve' = {port}")
        if not ingress_allowed(objects, aggregator, labels, port):
            errors.append(f"{owner}: NetworkPolicy keeps the aggregator from the {what} URL's port {port}")
    return errors


def _service_url_errors(objects: list[Manifest], merged: dict[str, Any]) -> list[str]:
    """The aggregator's Redis, probe and audit URLs name Services of the chart (or KubeRay), on open ports."""
    errors = []
    config = one(objects, "ConfigMap")["data"]
    serve = yaml.safe_load(one(objects, "RayService")["spec"]["serveConfigV2"])
    routes = {app["import_path"].split(".")[1]: app["route_prefix"] for app in serve["applications"]}
    errors += _serve_route_errors(
        objects, config["SAFE_FEDLLM_AGGREGATOR_PROBE_URL"], "probe", routes["probe_service"]
    )
    audit_url = config.get("SAFE_FEDLLM_AUDIT_LEVEL_URL")
    if merged["aggregator"]["defense"].startswith("audit"):
        if audit_url is None or "audit_service" not in routes:
            errors.append(f"defense {merged['aggregator']['defense']} without an audit URL and service")
        else:
            errors += _serve_route_errors(objects, audit_url, "audit", routes["audit_service"])
    elif audit_url is not None:
        errors.append(f"an audit URL for defense {merged['aggregator']['defense']}, which does not audit")
    aggregator = one(objects, "Deployment")["spec"]["template"]["spec"]
    redis_url = _env(aggregator, "aggregator")["SAFE_FEDLLM_REDIS_URL"]
    if merged["redis"]["enabled"]:
        host, port = _service_host_port(redis_url["value"])
        redis = [s for s in by_kind(objects, "Service") if s["metadata"]["name"] == host]
        if not redis or port not in {p["port"] for p in redis[0]["spec"]["ports"]}:
            errors.append(f"Redis URL {host}:{port} names no Service port of the chart")
        elif "$(SAFE_FEDLLM_REDIS_PASSWORD)" not in redis_url["value"]:
            errors.append("Redis URL carries no password")
    elif not (redis_url.get("value") or redis_url.get("valueFrom")):
        errors.append("external Redis URL is empty")
    return errors


def capacity_errors(values: dict[str, Any]) -> list[str]:
    """The most Serve replicas must fit on the most worker pods, or the autoscaler leaves replicas pending."""
    merged = chart().merge_values(values)
    probe, audit = merged["probeService"], merged["audit"]
    needed = sum(probe[d]["numCpus"] * probe[d]["autoscaling"]["maxReplicas"] for d in ("ingress", "scorer"))
    what = "probe replicas"
    limits = (audit["workerResources"] if audit["enabled"] else probe["workers"]["resources"])["limits"]
    errors = []
    if audit["enabled"]:
        needed += audit["replica"]["numCpus"] * audit["autoscaling"]["maxReplicas"]
        what = "probe and audit replicas"
        # Ray places an audit replica only where its memory reservation fits a pod's schedulable memory, and
        # that pod's object store must hold the shared base.
        ray_memory = memory_bytes(limits["memory"]) * (1 - RAY_OBJECT_STORE_SHARE)
        object_store = memory_bytes(limits["memory"]) * RAY_OBJECT_STORE_SHARE
        if audit["replica"]["memoryBytes"] > ray_memory:
            errors.append(
                f"an audit replica reserves {audit['replica']['memoryBytes']} bytes, "
                f"a worker pod's Ray memory is {ray_memory:.0f}"
            )
        if object_store < SHARED_BASE_BYTES:
            errors.append(
                f"a worker pod's object store ({object_store:.0f} bytes) cannot hold the shared base"
            )
    per_worker = cpu_count(limits["cpu"])
    available = per_worker * probe["workers"]["maxReplicas"]
    if needed > available:
        errors.append(f"{what} need {needed} CPUs at most, worker pods offer {available}")
    return errors


def chart_problems(values: dict[str, Any], objects: list[Manifest]) -> list[str]:
    problems = []
    for obj in objects:
        problems += schema_errors(obj) + kuberay_rule_errors(obj) + serve_config_errors(obj)
    return problems + reference_errors(objects, values) + capacity_errors(values)


class ChartKit:
    """The helpers above for the test modules (importlib mode does not let them import conftest)."""

    chart_dir = CHART_DIR
    mutations_dir = MUTATIONS_DIR
    release, namespace = RELEASE, NAMESPACE
    ci_values_files = staticmethod(ci_values_files)
    load_values = staticmethod(load_values)
    chart = staticmethod(chart)
    by_kind = staticmethod(by_kind)
    one = staticmethod(one)
    schema_errors = staticmethod(schema_errors)
    pod_templates = staticmethod(pod_templates)
    selects = staticmethod(selects)
    container_ports = staticmethod(container_ports)
    kuberay_rule_errors = staticmethod(kuberay_rule_errors)
    serve_config_errors = staticmethod(serve_config_errors)
    reference_errors = staticmethod(reference_errors)
    capacity_errors = staticmethod(capacity_errors)
    ingress_allowed = staticmethod(ingress_allowed)
    memory_bytes = staticmethod(memory_bytes)
    chart_problems = staticmethod(chart_problems)


@pytest.fixture(scope="session")
def kit() -> type[ChartKit]:
    return ChartKit
