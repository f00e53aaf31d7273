"""What every `safe-fedllm serve*` command does once its Serve app is up: block until stopped."""

from __future__ import annotations

import signal
import sys
import time


def serve_until_stopped() -> None:
    """Block until Ctrl-C or SIGTERM (a pod's stop signal), then shut Serve down cleanly."""
    from ray import serve as ray_serve

    sys.stdout.flush()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        ray_serve.shutdown()
