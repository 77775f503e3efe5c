"""train.py --report writes the metrics and the ROC and CV plots, headless and without convergence warnings."""

import json

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image
from sklearn.metrics import roc_auc_score

from churn.data import TARGET
from churn.model import fit, predict, split
from churn.report import plot_cv_auc, plot_roc
from devtools import ROOT

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(train_run):
    return train_run, train_run.model.parent


def test_writes_the_metrics_beside_the_model(trained):
    run, out = trained
    report = out / "report"
    assert sorted(p.name for p in report.iterdir()) == ["cv_auc.png", "metrics.json", "roc.png"]
    assert (report / "metrics.json").read_text() == (out / "model.bin.json").read_text()
    assert json.loads((report / "metrics.json").read_text())["model_file"] == "model.bin"
    assert f"the training report is in {report}" in run.stdout


@pytest.mark.parametrize(("name", "size"), [("roc.png", (500, 500)), ("cv_auc.png", (550, 450))])
def test_plots_are_png_images(trained, name, size):
    path = trained[1] / "report" / name
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert path.stat().st_size > 10_000  # a blank image of this size compresses to about 2 kB
    with Image.open(path) as image:
        assert (image.format, image.size) == ("PNG", size)
        # Anti-aliased curves and text give hundreds of colours; an empty canvas has one.
        assert len(image.getcolors(maxcolors=1 << 20)) > 100


def test_headless_and_converged(trained):
    run, _ = trained
    modules = json.loads(run.stdout.splitlines()[-1])
    assert "matplotlib.backends.backend_agg" in modules
    assert "matplotlib.pyplot" not in modules  # so no GUI backend is chosen, and no window can open
    assert "Warning" not in run.stderr


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
