"""A process that called a Serve deployment through a handle exits cleanly once its simulation session
closes: the session stops the handle's router while Ray is up. Left running, the router's metrics task calls
Ray after Ray's exit-time shutdown and starts a fresh local Ray from its thread (a 30 s hang at the demo's
exit, and "SIGTERM handler is not set ... not the main thread" in its output)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = """
from research.simulation import SimulationConfig, SimulationSession

session = SimulationSession()
connection = session.probes(SimulationConfig(model="tiny-llama"), fingerprint="unused")
print("probes:", len(connection.scorer.handle.loaded_probes.remote().result()))  # the router starts here
session.close()
"""


def test_a_closed_session_leaves_nothing_to_restart_ray_at_exit(free_port) -> None:
    env = {**os.environ, "SAFE_FEDLLM_PROBE_PORT": str(free_port())}
    for name in ("RAY_ADDRESS", "SAFE_FEDLLM_RAY_ADDRESS"):  # a local Ray of its own, which exits with it
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "probes:" in result.stdout
    assert "not the main thread" not in output, output[-3000:]
    assert "gcs_server_port" not in output  # the fresh Ray's start timing out
