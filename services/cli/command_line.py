"""What every result-writing command records: the command line as typed (one module, imported by them all)."""

from __future__ import annotations

import shlex
import sys


def invoked_command() -> str:
    """The command line as typed, recorded in result files so that anyone can re-run it."""
    return " ".join(["safe-fedllm", *map(shlex.quote, sys.argv[1:])])
