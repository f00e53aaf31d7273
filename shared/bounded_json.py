"""JSON from untrusted bytes with a bound on nesting depth, checked before the parser recurses.

Python's json parser recurses once per nesting level: a body of 100,000 `[` raises RecursionError deep
inside it (a 500 in a web service). The depth is measured first, vectorised: string literals are blanked
by one regular expression, then the running sum of opening minus closing brackets is taken with numpy.
An integer literal longer than Python's digit limit (4,300 digits) is refused as bad JSON too.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

MAX_DEPTH = 32
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # unrolled: linear, no backtracking
_DELTA = np.zeros(256, np.int8)
_DELTA[[ord("["), ord("{")]] = 1
_DELTA[[ord("]"), ord("}")]] = -1


class JsonError(ValueError):
    """Not JSON, or nested deeper than allowed."""


def nesting_depth(data: bytes) -> int:
    """The deepest bracket nesting outside string literals (0 for a scalar)."""
    stripped = _STRING.sub(b'""', data)
    if not stripped:
        return 0
    steps = _DELTA[np.frombuffer(stripped, np.uint8)]
    return int(np.cumsum(steps[steps != 0], dtype=np.int64).max(initial=0))


def loads(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """json.loads, refusing nesting deeper than `max_depth` before parsing."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    depth = nesting_depth(raw)
    if depth > max_depth:
        raise JsonError(f"JSON nested {depth} levels deep; at most {max_depth} allowed")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as error:
        # ValueError covers JSONDecodeError, UnicodeDecodeError and an integer literal over Python's
        # digit limit (sys.get_int_max_str_digits), which json raises as a plain ValueError.
        raise JsonError(f"not valid JSON: {str(error)[:200]}") from error
