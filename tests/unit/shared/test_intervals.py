"""The evaluation intervals against textbook values."""

import pytest

from shared.evaluation.intervals import mean_interval, wilson_interval


def test_wilson_matches_the_textbook_value_and_stays_in_range():
    # 8 of 40: Wilson 95% is (0.105, 0.348); the normal (Wald) interval would be (0.076, 0.324)
    low, high = wilson_interval(8, 40)
    assert (round(low, 3), round(high, 3)) == (0.105, 0.348)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_mean_interval_uses_the_sample_standard_deviation():
    # values 1, 2, 3: sd (ddof 1) = 1, SE = 1/sqrt(3); population sd would give a narrower interval
    low, high = mean_interval([1.0, 2.0, 3.0])
    assert high - 2.0 == pytest.approx(1.959963984540054 / 3**0.5)
    assert low == pytest.approx(4.0 - high)
    assert mean_interval([5.0]) == (5.0, 5.0)
