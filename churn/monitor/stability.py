"""The population stability index (PSI) between two distributions given as counts over the same bins.

PSI = sum over bins of (a - e) * ln(a / e), with e and a each distribution's share of a bin. A bin empty in one
distribution only would make it infinite: its share is taken as 0.0001, or a millionth of the smallest share when
that is smaller, as evidently's PSI test does for categories (a unit test compares the two). Under 0.1 is usually
read as no shift, 0.1 to 0.25 as a moderate one, above as a large one.
"""

import numpy as np

EMPTY_SHARE = 1e-4


def shares(counts) -> np.ndarray:
    counts = np.asarray(counts, dtype=float)
    share = counts / counts.sum()
    smallest = share[share > 0].min()
    share[share == 0] = smallest / 1e6 if smallest <= EMPTY_SHARE else EMPTY_SHARE
    return share


def psi(expected_counts, actual_counts) -> float:
    """The PSI of actual against expected; both need at least one count. A bin empty in both is no bin."""
    expected_counts, actual_counts = np.asarray(expected_counts), np.asarray(actual_counts)
    used = (expected_counts > 0) | (actual_counts > 0)
    expected, actual = shares(expected_counts[used]), shares(actual_counts[used])
    return float(np.sum((expected - actual) * np.log(expected / actual)))
