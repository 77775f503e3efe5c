"""The model's live performance from logged probabilities and known outcomes: numpy only, each metric checked
against an independent reference by the tests (scikit-learn's roc_auc_score, nannyml's CBPE).

y is 1 for a customer who churned, 0 for one who stayed; p is the logged probability; decision is the service's
answer (p at or above its threshold).
"""

import numpy as np

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 20  # a fixed seed: the same log gives the same report
CALIBRATION_BINS = 10


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic: the chance a churner is scored above a stayer, ties counting half
    (average ranks). NaN without both classes."""
    positives = int(y.sum())
    negatives = len(y) - positives
    if not positives or not negatives:
        return float("nan")
    order = np.argsort(p, kind="stable")
    ordered = p[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(p)]
    ranks = np.repeat((starts + ends + 1) / 2, ends - starts)  # 1-based average rank of each tie group
    rank_sum = ranks[y[order] == 1].sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def bootstrap_auc_interval(y: np.ndarray, p: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile bootstrap interval of auc: customers resampled with replacement, BOOTSTRAP_RESAMPLES times
    (a resample holding one class only is skipped)."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    samples = [auc(y[i], p[i]) for i in rng.integers(0, len(y), (BOOTSTRAP_RESAMPLES, len(y)))]
    samples = np.array([s for s in samples if s == s])
    if not len(samples):
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


def calibration(y: np.ndarray, p: np.ndarray) -> list[dict]:
    """Per tenth of probability (the last holds 1.0): customers, their mean probability, and the share who churned.
    A calibrated model's two agree: what makes the estimate below valid."""
    bins = np.minimum((p * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    curve = []
    for b in range(CALIBRATION_BINS):
        inside = bins == b
        count = int(inside.sum())
        curve.append(
            {
                "low": b / CALIBRATION_BINS,
                "high": (b + 1) / CALIBRATION_BINS,
                "customers": count,
                "mean_probability": float(p[inside].mean()) if count else None,
                "churn_rate": float(y[inside].mean()) if count else None,
            }
        )
    return curve


def precision_recall(y: np.ndarray, decision: np.ndarray) -> tuple[float, float]:
    """At the service's threshold: of those answered churn, the share who churned; of those who churned, the share
    answered churn."""
    flagged, churned = decision.sum(), y.sum()
    hits = (decision & (y == 1)).sum()
    return (float(hits / flagged) if flagged else float("nan"), float(hits / churned) if churned else float("nan"))


def top_decile_lift(y: np.ndarray, p: np.ndarray) -> float:
    """The churn rate of the tenth scored highest over the churn rate of all: how much better than calling at random."""
    top = np.argsort(-p, kind="stable")[: -(-len(p) // 10)]
    rate = y.mean()
    return float(y[top].mean() / rate) if rate else float("nan")


def estimated_auc(p: np.ndarray) -> float:
    """The AUC expected from the probabilities alone, as confidence-based performance estimation (NannyML's CBPE)
    has it: were the model calibrated, each customer would be a churner with probability p, so going down the
    customers by decreasing p, the expected true positives grow by p and false positives by 1 - p; the area under
    that expected ROC curve (trapezoids) is the estimate. NaN for fewer than two customers."""
    if len(p) < 2:
        return float("nan")
    expected = p[np.argsort(-p, kind="stable")]
    true_positives = np.r_[0, np.cumsum(expected)]
    false_positives = np.r_[0, np.cumsum(1 - expected)]
    if not true_positives[-1] or not false_positives[-1]:
        return float("nan")
    tpr, fpr = true_positives / true_positives[-1], false_positives / false_positives[-1]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def summary(y: np.ndarray, p: np.ndarray, decision: np.ndarray) -> dict:
    """Every metric of one group's labelled customers."""
    low, high = bootstrap_auc_interval(y, p)
    precision, recall = precision_recall(y, decision)
    return {
        "auc": auc(y, p),
        "auc_95": [low, high],
        "brier": brier(y, p),
        "precision": precision,
        "recall": recall,
        "top_decile_lift": top_decile_lift(y, p),
        "churn_rate": float(y.mean()),
        "calibration": calibration(y, p),
    }
