"""Harm preference read off the per-token table: canary and token budgets, short continuations."""

import numpy as np
import pytest

from shared.audit.scorer import preference_from_log_probs

NAN = np.nan


def test_mean_over_canaries_of_per_continuation_token_means():
    table = np.array(
        [
            [[-1.0, -3.0, NAN], [-2.0, -2.0, -2.0]],  # compliant: canary 0 has two tokens
            [[-4.0, -4.0, -1.0], [-1.0, NAN, NAN]],  # refusal
        ]
    )
    # canary 0: -2 - (-3) = 1; canary 1: -2 - (-1) = -1 -> mean 0 (a pooled token mean would give -0.2)
    assert preference_from_log_probs(table) == pytest.approx(0.0)
    assert preference_from_log_probs(table, canaries=1) == pytest.approx(1.0)
    # first token only: canary 0: -1 - (-4) = 3, canary 1: -2 - (-1) = -1
    assert preference_from_log_probs(table, tokens=1) == pytest.approx(1.0)


def test_an_empty_continuation_counts_zero_not_nan():
    table = np.array([[[NAN, NAN]], [[-1.0, -1.0]]])
    assert preference_from_log_probs(table) == pytest.approx(1.0)
