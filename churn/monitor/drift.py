"""Drift against the training split: the reference profile train.py writes beside the model, the bins customers are
counted in, and the population stability index (PSI) of their shares. docs/monitoring.md says how to read it.

Each feature has bins: a category's are its categories (the model's spelling), a number's are ten, cut at the
training split's deciles (bin i is [edge i, edge i+1), the first and last open-ended); the churn probability has ten
bins cut the same way. The service counts the customers it answers in these bins (churn.monitor.live), score.py
--drift a file's (churn.batch). Nothing here imports pandas or scikit-learn: the service uses it.
"""

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from churn.model.data import clean_text
from churn.model.schema import FEATURES, Feature

SCORE = "churn_probability"  # the probability's name in a profile and a drift table
BINS = 10
NUMBER_BINS = tuple(str(i) for i in range(BINS))
# evidently's get_binned_data: a share of 0 becomes 0.0001, or a millionth of the smallest share when that is smaller.
EMPTY_SHARE, EMPTY_FRACTION = 0.0001, 1e-6
# The usual reading of PSI (docs/monitoring.md): below 0.1 stable, up to 0.25 moderate, above significant.
LEVELS = ((0.1, "stable"), (0.25, "moderate"), (math.inf, "significant"))


class ReferenceUnavailable(Exception):
    """The sidecar has no (usable) reference profile; the message says what is wrong."""


def bins_of(feature: Feature) -> tuple[str, ...]:
    """A feature's bin labels: its categories in the model's spelling, or the ten decile bins."""
    return feature.clean_values if feature.categorical else NUMBER_BINS


def series_keys() -> list[tuple[str, str]]:
    """(feature name, bin) of every bin, features in the schema's order, then (SCORE, bin) of the probability's."""
    return [(f.name, b) for f in FEATURES for b in bins_of(f)] + [(SCORE, b) for b in NUMBER_BINS]


def decile_edges(values) -> list[float]:
    """The nine inner edges of ten bins: the deciles of values."""
    return np.quantile(np.asarray(values, float), np.arange(1, BINS) / BINS).tolist()


def number_bins(values, edges) -> np.ndarray:
    """Each value's bin: i where edge i <= value < edge i+1 (0 below the first edge, 9 from the last)."""
    return np.searchsorted(edges, values, side="right")


def psi(reference, live) -> float:
    """The population stability index Σ (live − reference) · ln(live / reference) over the bins, of two vectors of
    counts or shares (each is divided by its sum). Bins empty on both sides are left out and a share of 0 is replaced
    as evidently's get_binned_data replaces it, so this is evidently's PSI of the same bins. NaN when live is empty."""
    reference, live = np.asarray(reference, float), np.asarray(live, float)
    if live.sum() <= 0 or reference.sum() <= 0:
        return math.nan
    seen = (reference > 0) | (live > 0)
    reference, live = _filled(reference[seen] / reference.sum()), _filled(live[seen] / live.sum())
    return float(np.sum((live - reference) * np.log(live / reference)))


def _filled(shares: np.ndarray) -> np.ndarray:
    smallest = shares[shares > 0].min()
    return np.where(shares > 0, shares, smallest * EMPTY_FRACTION if smallest <= EMPTY_SHARE else EMPTY_SHARE)


def level(value: float) -> str:
    if math.isnan(value):
        return "no customers"
    return next(name for bound, name in LEVELS if value < bound)


@dataclass(frozen=True)
class Reference:
    """The training split's profile: for each feature, and for SCORE, its bins' edges (numbers) and shares."""

    edges: dict[str, list[float]]  # a number's (and SCORE's) nine inner edges
    shares: dict[str, list[float]]  # every feature's and SCORE's shares, in bins_of's order
    mean_abs_contribution: dict[str, float]
    rows: int

    def bins(self, name: str) -> tuple[str, ...]:
        return NUMBER_BINS if name == SCORE else bins_of(_FEATURE[name])

    def share_list(self) -> list[float]:
        """The shares in series_keys' order."""
        return [share for name in [*_FEATURE, SCORE] for share in self.shares[name]]

    def to_json(self) -> dict:
        profile = {
            name: ({"edges": self.edges[name]} if name in self.edges else {})
            | {"bins": list(self.bins(name)), "shares": self.shares[name]}
            for name in [*_FEATURE, SCORE]
        }
        return {
            "background": "the training split the model is fitted on",
            "rows": self.rows,
            "bins": profile,
            "mean_abs_contribution": self.mean_abs_contribution,
        }

    @classmethod
    def from_json(cls, data) -> "Reference":
        """The profile a sidecar holds, checked against the schema; ReferenceUnavailable saying what is wrong."""
        try:
            profile, rows, contributions = data["bins"], data["rows"], data["mean_abs_contribution"]
            edges, shares = {}, {}
            for name in [*_FEATURE, SCORE]:
                entry = profile[name]
                expected = list(NUMBER_BINS if name == SCORE else bins_of(_FEATURE[name]))
                if entry["bins"] != expected:
                    raise ReferenceUnavailable(f"has bins {entry['bins']} for {name}, not {expected}")
                shares[name] = _shares(name, entry["shares"], len(expected))
                if name == SCORE or not _FEATURE[name].categorical:
                    edges[name] = _edges(name, entry["edges"])
            if set(contributions) != set(_FEATURE):
                raise ReferenceUnavailable("has mean contributions that do not match the model's features")
            return cls(edges, shares, {name: float(contributions[name]) for name in _FEATURE}, int(rows))
        except (KeyError, TypeError, ValueError) as e:
            raise ReferenceUnavailable(f"has a reference profile that cannot be read ({e!r})") from None


_FEATURE = {f.name: f for f in FEATURES}
SHARE_TOLERANCE = 1e-9


def _shares(name: str, values, n: int) -> list[float]:
    if not (isinstance(values, list) and len(values) == n and all(isinstance(x, float | int) for x in values)):
        raise ReferenceUnavailable(f"has no {n} shares for {name}")
    if min(values) < 0 or abs(math.fsum(values) - 1) > SHARE_TOLERANCE:
        raise ReferenceUnavailable(f"has {name} shares {values}, not shares adding up to 1")
    return [float(x) for x in values]


def _edges(name: str, values) -> list[float]:
    if not (isinstance(values, list) and len(values) == BINS - 1 and all(isinstance(x, float | int) for x in values)):
        raise ReferenceUnavailable(f"has no {BINS - 1} bin edges for {name}")
    if values != sorted(values):
        raise ReferenceUnavailable(f"has {name} bin edges {values} out of order")
    return [float(x) for x in values]


def build_reference(frame, probabilities, mean_abs_contribution: dict[str, float]) -> Reference:
    """The profile of a training split: frame[name] is a feature's cleaned values (a pandas DataFrame will do),
    probabilities the model's on the same rows."""
    edges, shares = {}, {}
    for feature in FEATURES:
        values = np.asarray(frame[feature.name])
        if feature.categorical:
            counts = [np.count_nonzero(values == v) for v in feature.clean_values]
        else:
            edges[feature.name] = decile_edges(values)
            counts = np.bincount(number_bins(values.astype(float), edges[feature.name]), minlength=BINS)
        shares[feature.name] = (np.asarray(counts) / len(values)).tolist()
    edges[SCORE] = decile_edges(probabilities)
    shares[SCORE] = (
        np.bincount(number_bins(probabilities, edges[SCORE]), minlength=BINS) / len(probabilities)
    ).tolist()
    return Reference(edges, shares, dict(mean_abs_contribution), len(probabilities))


def series_counts(reference: Reference, columns: dict, probabilities, rows=None) -> np.ndarray:
    """The customers in each bin, in series_keys' order, from columns as LinearScorer.score_columns reads them (a
    category as (codes, spellings), or (None, spellings); a number as an array), counting only rows when given.
    One bincount over every feature's bin positions: a batch costs a few numpy calls per feature."""
    positions = []
    for feature in FEATURES:
        column = columns[feature.name]
        if feature.categorical:
            codes, spellings = column
            if codes is None:
                codes, spellings = _encoded(spellings)
            positions.append(
                _category_positions(feature.name, tuple(spellings))[codes if rows is None else codes[rows]]
            )
        else:
            values = column if rows is None else column[rows]
            positions.append(number_bins(values, reference.edges[feature.name]) + _OFFSET[feature.name])
    positions.append(number_bins(probabilities, reference.edges[SCORE]) + _OFFSET[SCORE])
    return np.bincount(np.concatenate(positions), minlength=len(_SERIES))


def counts_of(reference: Reference, columns: dict, probabilities, rows=None) -> dict[str, np.ndarray]:
    """series_counts by feature (and SCORE): each one's customers per bin."""
    counts = series_counts(reference, columns, probabilities, rows)
    return {name: counts[offset : offset + size] for name, (offset, size) in _SLICES.items()}


@lru_cache(maxsize=256)
def _category_positions(name: str, spellings: tuple) -> np.ndarray:
    """Where each of spellings (any accepted spelling of a category of feature name) counts among the series."""
    return np.array([_OFFSET[name] + CATEGORY_BIN[name][spelling] for spelling in spellings], np.intp)


def _encoded(values: list) -> tuple[np.ndarray, list]:
    spellings = list(dict.fromkeys(values))
    code = {s: i for i, s in enumerate(spellings)}
    return np.fromiter(map(code.__getitem__, values), np.intp, len(values)), spellings


_SERIES = series_keys()
_OFFSET = {}  # where each feature's (and SCORE's) bins start among the series
for _place, (_name, _) in enumerate(_SERIES):
    _OFFSET.setdefault(_name, _place)
_SLICES = {name: (offset, sum(key[0] == name for key in _SERIES)) for name, offset in _OFFSET.items()}
# For each category feature, every accepted spelling (the model's, the dataset's) -> its bin's place.
CATEGORY_BIN = {
    f.name: {spelling: f.clean_values.index(clean_text(spelling)) for spelling in f.accepted_values}
    for f in FEATURES
    if f.categorical
}


def added(total: dict | None, counts: dict) -> dict:
    """Two runs' counts per bin summed (total None: counts alone)."""
    return dict(counts) if total is None else {name: total[name] + counts[name] for name in counts}


TABLE_COLUMNS = ("feature", "psi", "level", "bin", "range", "reference_share", "share", "customers")


def drift_table(reference: Reference, counts: dict) -> list[dict]:
    """One row per bin of every feature and of SCORE: the feature's PSI and its level (repeated on each of its
    rows), the bin, its values, the training share, the share counted and the customers; largest PSI first."""
    rows = []
    for name in [*_FEATURE, SCORE]:
        customers = np.asarray(counts[name])
        value = psi(reference.shares[name], customers)
        total = customers.sum()
        for i, bin_ in enumerate(reference.bins(name)):
            rows.append(
                {
                    "feature": name,
                    "psi": value,
                    "level": level(value),
                    "bin": bin_,
                    "range": bin_range(reference.edges[name], i) if name in reference.edges else bin_,
                    "reference_share": reference.shares[name][i],
                    "share": customers[i] / total if total else math.nan,
                    "customers": int(customers[i]),
                }
            )
    return sorted(rows, key=lambda row: -row["psi"] if not math.isnan(row["psi"]) else 0)


def bin_range(edges: list[float], i: int) -> str:
    """A number bin's values: [low, high), the first and last open-ended."""
    if i == 0:
        return f"< {edges[0]:g}"
    if i == len(edges):
        return f">= {edges[-1]:g}"
    return f"[{edges[i - 1]:g}, {edges[i]:g})"


def write_drift_table(path, rows: list[dict]) -> None:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, TABLE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def drift_summary(rows: list[dict]) -> str:
    """One line: each feature at a level other than stable, with its PSI."""
    moved = {row["feature"]: (row["psi"], row["level"]) for row in rows if row["level"] != "stable"}
    listed = ", ".join(f"{name} {value:.3f} ({name_level})" for name, (value, name_level) in moved.items())
    return f"drift: every feature stable (PSI < {LEVELS[0][0]})" if not moved else f"drift: {listed}"
