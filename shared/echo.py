"""Untrusted text echoed in error messages: bounded in length and always encodable as UTF-8.

An id, a tensor name or a validation message can be megabytes long or hold a lone surrogate ("\\ud800",
valid JSON, not encodable): echoed as is, the first bloats every error answer and the second turns the
answer into a 500 when the response is encoded.
"""

from __future__ import annotations

MAX_ECHO = 64  # characters of an untrusted value an error message repeats


def quoted(value: object, limit: int = MAX_ECHO) -> str:
    """repr() of at most `limit` characters of the value's text (repr escapes lone surrogates)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def printable(text: str, limit: int = 512) -> str:
    """The text cut to `limit` characters, with anything not encodable as UTF-8 backslash-escaped."""
    clipped = text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
    return clipped.encode("utf-8", "backslashreplace").decode("utf-8")
