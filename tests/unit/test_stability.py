"""The PSI of churn.monitor.stability against scipy: with no empty bin, PSI is the symmetric Kullback-Leibler
divergence, KL(e||a) + KL(a||e)."""

import numpy as np
import pytest
from scipy.stats import entropy

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
