"""churn.model.report: the ROC plot shows the curve and its AUC, the CV plot each fold and their spread."""

import json

import numpy as np
import pytest
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score

from churn.model.data import TARGET
from churn.model.report import plot_cv_auc, plot_roc
from churn.model.training import fit, predict, split
from devtools import ROOT


@pytest.fixture(scope="module")
def scored_test_split(clean_df):
    df_full_train, df_test = split(clean_df)
    dv, model = fit(df_full_train)
    return df_test[TARGET].to_numpy(), predict(df_test, dv, model)


def test_roc_plot_shows_the_curve_and_its_auc(scored_test_split):
    y_true, y_score = scored_test_split
    ax = plot_roc(Figure().subplots(), y_true, y_score, label="test")
    curve = ax.get_lines()[0]
    assert (curve.get_xdata()[0], curve.get_ydata()[0]) == (0, 0)
    assert (curve.get_xdata()[-1], curve.get_ydata()[-1]) == (1, 1)
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend[0] == f"test (AUC = {roc_auc_score(y_true, y_score):.3f})"


def test_cv_plot_shows_each_fold_and_their_spread():
    aucs = json.loads((ROOT / "model_C=1.0.bin.json").read_text())["cv_auc"]
    ax = plot_cv_auc(Figure().subplots(), aucs)
    points = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert len(points) == 1
    np.testing.assert_array_equal(points[0].get_ydata(), aucs)
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert f"mean ± std = {np.mean(aucs):.3f} ± {np.std(aucs):.3f}" in legend
    low, high = ax.get_ylim()
    assert low < min(aucs) and max(aucs) < high
