"""threshold_for_fpr: at most floor(fpr * n) benign scores at or above the threshold, ties never flagged.
fitted_threshold_for_fpr: a normal's (1 − fpr) quantile (sample SD), never below the empirical rule."""

from statistics import NormalDist

import numpy as np
import pytest

from shared.calibration import false_positive_rate, fitted_threshold_for_fpr, threshold_for_fpr

BENIGN = [0.1, 0.5, 0.3, 0.9, 0.7, 0.2, 0.8, 0.4, 0.6, 0.0]


def test_zero_fpr_sits_just_above_the_largest_benign_score():
    threshold = threshold_for_fpr(BENIGN, 0.0)
    assert threshold == np.nextafter(0.9, np.inf)
    assert false_positive_rate(BENIGN, threshold) == 0.0


@pytest.mark.parametrize(("fpr", "above"), [(0.1, 0.8), (0.19, 0.8), (0.2, 0.7), (0.35, 0.6)])
def test_k_largest_are_flagged_with_k_floor_of_fpr_times_n(fpr, above):
    threshold = threshold_for_fpr(BENIGN, fpr)
    assert threshold == np.nextafter(above, np.inf)
    assert false_positive_rate(BENIGN, threshold) == pytest.approx(int(fpr * 10 + 1e-9) / 10)


def test_ties_at_the_cut_are_not_flagged_so_the_rate_stays_below_the_target():
    scores = [1.0, 2.0, 2.0, 2.0, 3.0]
    threshold = threshold_for_fpr(scores, 0.4)  # k = 2, but three scores tie at 2.0
    assert threshold == np.nextafter(2.0, np.inf)
    assert false_positive_rate(scores, threshold) == 0.2


@pytest.mark.parametrize(("fpr", "n", "flags"), [(0.02, 50, 1), (0.29, 100, 29), (0.57, 100, 57)])
def test_rounding_of_fpr_times_n_does_not_lose_a_flag(fpr, n, flags):
    # 0.29 * 100 is 28.999999999999996 in binary (0.57 * 100: 56.99999999999999); a bare floor would
    # allow one flag fewer than the rate permits. 0.02 * 50 happens to be exact.
    scores = np.arange(n, dtype=float)
    threshold = threshold_for_fpr(scores, fpr)
    assert threshold == np.nextafter(float(n - 1 - flags), np.inf)
    assert false_positive_rate(scores, threshold) == flags / n


def test_a_score_equal_to_the_threshold_counts_as_flagged():
    assert false_positive_rate([1.0, 2.0, 2.0, 2.0, 3.0], 2.0) == 0.8  # flag: score >= t


@pytest.mark.parametrize(("scores", "fpr"), [([], 0.1), ([0.1, np.nan], 0.1), ([0.1], 1.0), ([0.1], -0.1)])
def test_bad_inputs_are_refused(scores, fpr):
    with pytest.raises(ValueError):
        threshold_for_fpr(scores, fpr)


def test_the_fitted_threshold_extrapolates_the_tail_with_the_sample_sd():
    # mean 2, sample SD sqrt(2.5); the population SD (sqrt(2)) would give 4.90, the empirical rule just
    # above 4: a new benign score from the same spread would pass either about one time in six.
    threshold = fitted_threshold_for_fpr([0.0, 1.0, 2.0, 3.0, 4.0], 0.02)
    assert threshold == pytest.approx(2.0 + NormalDist().inv_cdf(0.98) * 2.5**0.5, rel=1e-12)
    assert threshold == pytest.approx(5.2472, abs=1e-4)


def test_the_empirical_rule_is_the_fitted_threshold_s_floor():
    scores = [0.0] * 9 + [10.0]  # fitted: 1 + 2.054 * 3.16 = 7.49, below the outlier
    assert fitted_threshold_for_fpr(scores, 0.02) == np.nextafter(10.0, np.inf)
    assert false_positive_rate(scores, fitted_threshold_for_fpr(scores, 0.02)) == 0.0


@pytest.mark.parametrize(("scores", "fpr"), [([0.5], 0.02), ([0.0, 1.0, 2.0], 0.0)])
def test_one_score_or_a_zero_rate_leaves_the_empirical_rule(scores, fpr):
    assert fitted_threshold_for_fpr(scores, fpr) == threshold_for_fpr(scores, fpr)


@pytest.mark.parametrize(("scores", "fpr"), [([], 0.1), ([0.1, np.inf], 0.1), ([0.1, 0.2], 1.0)])
def test_the_fitted_threshold_refuses_bad_inputs(scores, fpr):
    with pytest.raises(ValueError):
        fitted_threshold_for_fpr(scores, fpr)
