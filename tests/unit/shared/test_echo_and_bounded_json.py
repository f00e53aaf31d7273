"""Untrusted JSON and untrusted text in error messages: refused cleanly, echoed bounded and encodable."""

import json

import pytest

from shared.bounded_json import JsonError, loads
from shared.echo import printable, quoted


def test_an_integer_past_the_digit_limit_is_bad_json_not_a_value_error():
    assert loads(b'{"r": ' + b"9" * 4300 + b"}")["r"] == int("9" * 4300)  # at the limit: parsed
    with pytest.raises(JsonError, match="4300 digits"):
        loads(b'{"r": ' + b"9" * 4301 + b"}")
    with pytest.raises(JsonError, match="not valid JSON"):
        loads(b"[-" + b"1" * 10_000 + b"]")


def test_quoted_cuts_long_values_and_escapes_lone_surrogates():
    assert quoted("c0") == "'c0'"
    assert quoted("x" * 65) == f"{'x' * 64!r}... (65 characters)"
    assert quoted("\ud800") == "'\\ud800'"
    assert quoted("a" * 10, limit=3) == "'aaa'... (10 characters)"


def test_printable_is_always_encodable_and_bounded():
    text = printable("bad \udc80 id", 512)
    assert text == "bad \\udc80 id" and json.dumps(text, ensure_ascii=False).encode("utf-8")
    assert printable("y" * 600, 512) == "y" * 512 + "... (600 characters)"
