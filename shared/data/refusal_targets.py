"""Refusal targets for safety alignment: an explicit refusal opening, then the safe explanation.

benignQA's "safe" answers often lecture and then comply in part; opening every target with an explicit
refusal (varied wording, each containing a refusal marker) makes the behaviour learnable and measurable.
"""

from __future__ import annotations

import re

from shared.data.sources import HarmfulPair

REFUSAL_OPENINGS: tuple[str, ...] = (
    "I'm sorry, but I can't help with that.",
    "I'm sorry, but I cannot assist with this request.",
    "I cannot help with that request.",
    "I apologize, but I can't provide that.",
    "Sorry, but I can't assist with that.",
    "I'm really sorry, but I cannot help with this.",
    "As an AI assistant, I cannot help with requests that could cause harm.",
    "My apologies, but I can't provide help with that.",
    "I'm sorry, I cannot do that.",
    "I am unable to help with this request.",
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")



def refusal_target(pair: HarmfulPair, index: int, safe_sentences: int) -> str:
    opening = REFUSAL_OPENINGS[index % len(REFUSAL_OPENINGS)]
    explanation = " ".join(_SENTENCE_END.split(pair.safe)[:safe_sentences]).strip()
    return f"{opening} {explanation}".strip()
