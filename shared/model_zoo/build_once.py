"""Artifacts built once per machine and cached outside the repository (the SmolLM2 tokenizer and weights,
tiny-llama): one builder at a time, and never a half-written directory.

Processes that start together (the test suite's two lanes, Ray workers, a demo beside a test run) would
otherwise all build the same artifact at once, and a reader could open a directory another process is still
writing. The first process takes an exclusive lock and builds into a private directory that is renamed into
place; the others wait on the lock and then find the artifact there.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path


def build_once(target: Path, build: Callable[[Path], None], *, complete: str) -> Path:
    """`target`, first filled by `build(directory)` unless `target / complete` exists (the file a build
    writes last, or the one a loader needs: its presence means the artifact is there)."""
    if (target / complete).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # The lock file stays: removing it would let a waiter and a newcomer lock two different files.
    with open(target.with_name(f"{target.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when the process dies
        if (target / complete).is_file():  # the process this one waited for built it
            return target
        scratch = target.with_name(f"{target.name}.partial-{os.getpid()}")
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            build(scratch)
            if not (scratch / complete).is_file():
                raise RuntimeError(f"building {target.name} wrote no {complete}")
            shutil.rmtree(target, ignore_errors=True)  # an incomplete directory from before the lock
            scratch.replace(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target
