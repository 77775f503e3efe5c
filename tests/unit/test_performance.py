"""churn.monitor.performance against independent references: scikit-learn's metrics and nannyml's CBPE."""

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, precision_score, recall_score, roc_auc_score

from churn.monitor import performance


def labelled(seed: int, n: int, decimals: int | None):
    rng = np.random.default_rng(seed)
    p = rng.beta(1, 2.5, n)
    if decimals is not None:  # ties, as a model with few distinct answers gives
        p = np.round(p, decimals)
    return (rng.random(n) < p).astype(int), p


@pytest.mark.parametrize("seed,n,decimals", [(1, 2000, None), (2, 1500, 2), (3, 50, 1), (4, 7043, 3)])
def test_auc_is_scikit_learns(seed, n, decimals):
    y, p = labelled(seed, n, decimals)
    assert abs(performance.auc(y, p) - roc_auc_score(y, p)) <= 1e-12


def test_auc_of_one_class_is_nan():
    assert np.isnan(performance.auc(np.ones(5, int), np.linspace(0, 1, 5)))


def test_the_bootstrap_interval_holds_the_auc_and_narrows_with_more_customers():
    y, p = labelled(5, 4000, None)
    small = performance.bootstrap_auc_interval(y[:400], p[:400])
    large = performance.bootstrap_auc_interval(y, p)
    assert small[0] < performance.auc(y[:400], p[:400]) < small[1]
    assert large[0] < performance.auc(y, p) < large[1]
    assert large[1] - large[0] < small[1] - small[0]


def test_brier_precision_recall_and_calibration_are_scikit_learns():
    y, p = labelled(6, 3000, None)
    decision = p >= 0.5
    assert performance.brier(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-15)
    precision, recall = performance.precision_recall(y, decision)
    assert (precision, recall) == pytest.approx((precision_score(y, decision), recall_score(y, decision)), abs=1e-15)
    churn_rate, mean_probability = calibration_curve(y, p, n_bins=10, strategy="uniform")
    curve = [b for b in performance.calibration(y, p) if b["customers"]]
    assert [b["churn_rate"] for b in curve] == pytest.approx(churn_rate, abs=1e-12)
    assert [b["mean_probability"] for b in curve] == pytest.approx(mean_probability, abs=1e-12)
    assert sum(b["customers"] for b in performance.calibration(y, p)) == len(y)


def test_top_decile_lift():
    y = np.array([1, 0] * 50)
    p = np.linspace(1, 0, 100)  # the top ten are 1, 0, 1, ...: 5 churners of 10, as overall
    assert performance.top_decile_lift(y, p) == pytest.approx(1.0)
    assert performance.top_decile_lift(np.r_[np.ones(10), np.zeros(90)], p) == pytest.approx(10.0)


@pytest.fixture(scope="module")
def nannyml():
    import nannyml
    from nannyml.usage_logging import disable_usage_logging

    disable_usage_logging()  # nannyml would otherwise report each call to a web service
    return nannyml


@pytest.mark.parametrize("seed,n,decimals", [(7, 2000, None), (8, 1409, 2), (9, 300, 1)])
def test_estimated_auc_is_nannymls_cbpe(nannyml, seed, n, decimals):
    """nannyml's CBPE, fitted on labelled reference data and estimating on unlabelled analysis data, with its
    calibration left out (an identity calibrator): the report's estimate, like CBPE's, assumes a calibrated model."""

    class Identity(nannyml.calibration.Calibrator):
        def fit(self, y_pred_proba, y_true):
            pass

        def calibrate(self, y_pred_proba):
            return y_pred_proba

    y, p = labelled(seed, n, decimals)
    reference = pd.DataFrame({"p": p, "y": y, "decision": (p >= 0.5).astype(int)})
    _, analysis_p = labelled(seed + 100, n, decimals)
    analysis = pd.DataFrame({"p": analysis_p, "decision": (analysis_p >= 0.5).astype(int)})
    cbpe = nannyml.CBPE(
        y_pred_proba="p",
        y_pred="decision",
        y_true="y",
        problem_type="classification_binary",
        metrics=["roc_auc"],
        chunk_number=1,
        calibrator=Identity(),
    )
    cbpe.fit(reference)
    estimated = cbpe.estimate(analysis).filter(period="analysis").to_df()[("roc_auc", "value")].iloc[0]
    assert abs(performance.estimated_auc(analysis_p) - estimated) <= 1e-6
