"""The PSI of churn.monitor.stability against evidently's PSI test, and against scipy: with no empty bin, PSI is
the symmetric Kullback-Leibler divergence, KL(e||a) + KL(a||e)."""

import numpy as np
import pytest
from scipy.stats import entropy

import tests.references  # noqa: F401 (evidently importable under pandas 3, for the test that compares with it)
from churn.monitor.stability import EMPTY_SHARE, psi


@pytest.mark.parametrize("seed", range(5))
def test_psi_is_the_symmetric_kl_divergence_of_the_shares(seed):
    rng = np.random.default_rng(seed)
    expected, actual = rng.integers(1, 1000, 10), rng.integers(1, 1000, 10)
    e, a = expected / expected.sum(), actual / actual.sum()
    assert psi(expected, actual) == pytest.approx(entropy(e, a) + entropy(a, e), rel=1e-12)


def test_the_same_distribution_has_no_shift_and_scale_does_not_matter():
    counts = np.array([5, 10, 20, 40, 25])
    assert psi(counts, counts * 7) == pytest.approx(0, abs=1e-15)


def test_a_bin_empty_in_one_distribution_counts_as_a_tiny_share_and_one_empty_in_both_is_no_bin():
    expected, actual = [50, 50, 0, 0], [50, 0, 50, 0]
    shares_e, shares_a = np.array([0.5, 0.5, EMPTY_SHARE]), np.array([0.5, EMPTY_SHARE, 0.5])
    assert psi(expected, actual) == pytest.approx(np.sum((shares_e - shares_a) * np.log(shares_e / shares_a)))
    # Where the smallest share is already below EMPTY_SHARE, an empty bin is a millionth of it.
    expected, actual = [1, 99_999, 0], [1, 99_998, 1]
    e = np.array([1e-5, 0.99999, 1e-11])
    a = np.array([1, 99_998, 1]) / 100_000
    assert psi(expected, actual) == pytest.approx(np.sum((e - a) * np.log(e / a)))


@pytest.mark.parametrize("seed", range(5))
def test_psi_is_evidentlys_for_the_same_bins_empty_ones_included(seed):
    import pandas as pd
    from evidently.legacy.calculations.stattests import psi_stat_test
    from evidently.legacy.core import ColumnType

    rng = np.random.default_rng(seed)
    # Each customer's tenth, for two models; the second never reaches the top two tenths, the first the bottom one.
    reference, current = rng.integers(1, 10, 3000), rng.integers(0, 8, 2000)
    expected = psi_stat_test(pd.Series(reference), pd.Series(current), ColumnType.Categorical, 0.1).drift_score
    assert psi(np.bincount(reference, minlength=10), np.bincount(current, minlength=10)) == pytest.approx(expected)
