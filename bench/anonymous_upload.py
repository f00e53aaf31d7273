"""An anonymous (or forged-token) 100 MiB submission: how soon the aggregator refuses it.

The aggregator (shadow level, default 64 MiB update limit: 129 MiB per submission) on a real redis-server,
served by uvicorn on loopback. A raw socket declares a 100 MiB multipart body and streams it in 1 MiB
chunks while a reader waits for the answer; the script prints the status, the seconds until it came and
how much the client had pushed by then (most of it sits unread in socket buffers when the server refuses on
the headers).

    python bench/anonymous_upload.py
"""

from __future__ import annotations

import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services.aggregator.api.app import create_app  # noqa: E402
from tests.conftest import RedisServer, _free_port  # noqa: E402
from tests.integration.hostile_apps import (  # noqa: E402
    ServerThread,
    aggregator_service,
    aggregator_settings,
    export_probe,
)

TOTAL = 100 * 1024 * 1024
CHUNK = b"\0" * (1024 * 1024)


def upload(port: int, credentials: str) -> tuple[str, float, int]:
    """(status, seconds until the answer, bytes pushed by then) for one 100 MiB submission."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = (
        f"POST /v1/rounds/0/updates HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {TOTAL}\r\n"
        f"Content-Type: multipart/form-data; boundary=x\r\n{credentials}\r\n"
        '--x\r\nContent-Disposition: form-data; name="adapter"; filename="a"\r\n\r\n'
    ).encode()
    start, answer = time.perf_counter(), {}

    def read() -> None:
        answer["status"] = sock.recv(4096).split(b" ")[1].decode()
        answer["seconds"] = time.perf_counter() - start

    reader = threading.Thread(target=read)
    reader.start()
    sent = 0
    try:
        sock.sendall(head)
        while sent < TOTAL and reader.is_alive():
            sock.sendall(CHUNK)
            sent += len(CHUNK)
    except OSError:
        pass  # the server closed the connection after answering
    reader.join(120)
    sock.close()
    return answer.get("status", "none"), answer.get("seconds", float("nan")), sent


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    export_probe(tmp / "probes")
    redis = RedisServer(tmp)
    try:
        settings = aggregator_settings(max_update_bytes=64 * 1024 * 1024)
        service = aggregator_service(tmp / "probes", redis.client(), settings)
        with ServerThread(create_app(service), _free_port()) as server:
            port = int(server.url.rsplit(":", 1)[1])
            for label, credentials in (
                ("anonymous", ""),
                ("forged token", "X-Client-Id: c0\r\nAuthorization: Bearer forged\r\n"),
            ):
                status, seconds, sent = upload(port, credentials)
                print(f"{label}: {status} after {seconds:.3f} s; {sent / 2**20:.0f} MiB of 100 MiB pushed")
    finally:
        redis.kill()


if __name__ == "__main__":
    main()
