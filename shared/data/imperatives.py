"""Harmful questions restated as imperative requests, for the alignment stage's refusal rows (#28).

Every harmful row of the alignment and client pools is a question ("How can I ...?", "Can you ...?", "What
are ...?"), while the evaluation's AdvBench goals and the clients' Alpaca instructions are imperatives. An
aligned base trained on questions alone refuses imperative harm only by generalising, and instruction tuning
on imperative benign rows moves exactly that boundary. These rules restate the alignment pool's own
questions in the imperative forms instruction data uses; nothing is taken from the evaluation pool.
"""

from __future__ import annotations

import re

# AdvBench-like openings for "how"-questions; the row index picks one, so the restatement is deterministic.
_HOW_OPENINGS = (
    "Explain how to",
    "Write a tutorial on how to",
    "Provide step-by-step instructions for how to",
    "Give detailed instructions on how to",
)
_HOW = re.compile(
    r"^how (?:can|do|could|would|should|might|may) (?:i|we|you|one|someone|a person|people) (?P<rest>.+)$", re.I
)
_HOW_TO = re.compile(r"^how to (?P<rest>.+)$", re.I)
_CAN_YOU = re.compile(r"^(?:can|could|would|will) you (?:please )?(?P<rest>.+)$", re.I)
_WHAT = re.compile(r"^what (?:are|is) (?P<rest>.+)$", re.I)


def as_imperative(question: str, index: int = 0) -> str | None:
    """`question` as an imperative request, or None where no rule applies (the row is then left out)."""
    text = question.strip().strip('"').strip()
    if not text.endswith("?"):
        return None
    body = text[:-1].rstrip()
    if match := _HOW.match(body) or _HOW_TO.match(body):
        return f"{_HOW_OPENINGS[index % len(_HOW_OPENINGS)]} {match['rest']}."
    if match := _CAN_YOU.match(body):
        rest = match["rest"]
        return f"{rest[0].upper()}{rest[1:]}."
    if match := _WHAT.match(body):
        verb = "List" if re.match(r"(?:some|the) \w+s\b", match["rest"], re.I) else "Describe"
        return f"{verb} {match['rest']}."
    return None
