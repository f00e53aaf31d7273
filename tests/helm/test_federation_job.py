"""The federation RayJob (participants as Ray actors over REST) and the scheduler block, rendered offline by a
real Helm engine and checked against the KubeRay CRD schemas and the chart's own rules."""

from __future__ import annotations

import json
import shlex

import pytest

TOKENS = [f"enrollment-token-{i:02d}-abcdef" for i in range(5)]
FEDERATION = {
    "federationJob": {"enabled": True, "clients": 5, "maliciousRatio": 0.4, "samplesPerClient": 32},
    "aggregator": {
        "auth": {"enrollmentTokens": TOKENS},
        "federation": {"numRounds": 6, "clientsPerRound": 5},
        "scheduler": {"enabled": True, "roundDeadlineS": 300, "minUpdates": 3, "minClients": 5},
    },
}


def _job(kit, objects):  # type: ignore[no-untyped-def]
    return kit.one(objects, "RayJob", f"{kit.release}-safe-fedllm-federation")


def _options(entrypoint: str) -> dict[str, str]:
    words = shlex.split(entrypoint)
    assert words[:3] == ["safe-fedllm", "client", "federate"]
    return dict(w.removeprefix("--").partition("=")[::2] for w in words[3:])


def test_the_job_federates_through_the_aggregator_service_with_one_token_each(kit, rendered):
    objects = rendered(FEDERATION)
    assert kit.chart_problems(FEDERATION, objects) == []
    job = _job(kit, objects)
    options = _options(job["spec"]["entrypoint"])
    assert options == {
        "server": f"http://{kit.release}-safe-fedllm-aggregator.{kit.namespace}.svc:80",
        "tokens-file": "/var/run/safe-fedllm/enrollment/tokens.json",
        "clients": "5",
        "malicious-ratio": "0.4",
        "samples-per-client": "32",
        "benign-source": "helpful",
        "seed": "2023",
        "until-round": "5",  # numRounds - 1
        "cpus-per-client": "1",
        "threads": "1",
        "poll-interval": "5",
        "insecure-http": "",  # in-cluster plain http, said explicitly
    }
    service = kit.one(objects, "Service", f"{kit.release}-safe-fedllm-aggregator")
    assert service["spec"]["ports"][0]["port"] == 80
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    (volume,) = [v for v in head["volumes"] if v["name"] == "enrollment-tokens"]
    secret = kit.one(objects, "Secret", volume["secret"]["secretName"])
    assert volume["secret"]["items"] == [
        {"key": "enrollment-tokens", "path": "tokens.json"}
    ]  # no admin token
    assert "admin-token" in secret["data"]  # ... which the same Secret holds
    import base64

    assert json.loads(base64.b64decode(secret["data"]["enrollment-tokens"])) == TOKENS
    (mount,) = [m for m in head["containers"][0]["volumeMounts"] if m["name"] == "enrollment-tokens"]
    assert mount["mountPath"] + "/tokens.json" == options["tokens-file"] and mount["readOnly"]
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    assert all(v["name"] != "enrollment-tokens" for v in workers["volumes"])  # the driver hands them out


def test_an_external_https_server_and_an_explicit_last_round(kit, rendered):
    values = json.loads(json.dumps(FEDERATION))
    values["federationJob"] |= {"server": "https://fl.example.org", "untilRound": 2, "cpusPerClient": 0.5}
    options = _options(_job(kit, rendered(values))["spec"]["entrypoint"])
    assert options["server"] == "https://fl.example.org" and "insecure-http" not in options
    assert (options["until-round"], options["cpus-per-client"]) == ("2", "0.5")


def test_the_scheduler_block_reaches_the_aggregator_environment(kit, rendered):
    config = kit.one(rendered(FEDERATION), "ConfigMap")["data"]
    scheduler = {
        k.removeprefix("SAFE_FEDLLM_AGGREGATOR_SCHEDULER__"): v for k, v in config.items() if "SCHEDULER" in k
    }
    assert scheduler == {
        "ENABLED": "true",
        "ROUND_DEADLINE_S": "300",
        "MIN_UPDATES": "3",
        "MIN_CLIENTS": "5",
        "POLL_INTERVAL_S": "1",
        "LEASE_TTL_S": "15",
    }
    with_max = json.loads(json.dumps(FEDERATION))
    with_max["aggregator"]["scheduler"]["maxRounds"] = 4
    assert (
        kit.one(rendered(with_max), "ConfigMap")["data"]["SAFE_FEDLLM_AGGREGATOR_SCHEDULER__MAX_ROUNDS"]
        == "4"
    )
    default = kit.one(rendered({}), "ConfigMap")["data"]
    assert default["SAFE_FEDLLM_AGGREGATOR_SCHEDULER__ENABLED"] == "false"  # off unless configured
    assert not kit.by_kind(rendered({}), "RayJob")


def test_the_scheduler_settings_parse_as_the_aggregator_reads_them(kit, rendered, monkeypatch):
    from services.aggregator.settings import AggregatorSettings

    for name, value in kit.one(rendered(FEDERATION), "ConfigMap")["data"].items():
        if name.startswith("SAFE_FEDLLM_AGGREGATOR_SCHEDULER__"):
            monkeypatch.setenv(name, value)
    scheduler = AggregatorSettings().scheduler
    assert (scheduler.enabled, scheduler.round_deadline_s, scheduler.min_updates, scheduler.min_clients) == (
        True,
        300.0,
        3,
        5,
    )


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        (
            {"clients": 6},
            "federationJob.clients is 6: list as many single-use aggregator.auth.enrollmentTokens (got 5)",
        ),
        ({"maliciousRatio": 1.5}, "at '/federationJob/maliciousRatio'"),
        ({"benignSource": "wiki"}, "at '/federationJob/benignSource'"),
        ({"server": "ftp://x"}, "at '/federationJob/server'"),
        ({"client": 3}, "additional properties 'client' not allowed"),
    ],
)
def test_bad_federation_values_are_refused_with_their_reason(kit, change, refusal):
    import helm_python

    values = json.loads(json.dumps(FEDERATION))
    values["federationJob"] |= change
    with pytest.raises(helm_python.errors.HelmError) as refused:
        kit.chart().render(values, name=kit.release, namespace=kit.namespace, is_install=True)
    assert refusal in str(refused.value)


def test_a_bad_scheduler_value_is_refused(kit):
    import helm_python

    values = json.loads(json.dumps(FEDERATION))
    values["aggregator"]["scheduler"]["roundDeadlineS"] = 0
    with pytest.raises(helm_python.errors.HelmError) as refused:
        kit.chart().render(values, name=kit.release, namespace=kit.namespace, is_install=True)
    assert "at '/aggregator/scheduler/roundDeadlineS'" in str(refused.value)
