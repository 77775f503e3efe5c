"""The training report: the metrics as JSON, and PNG plots of the test ROC curve and of the CV AUC by fold.

The figures are matplotlib.figure.Figure objects saved directly: that draws with Agg and never touches pyplot,
so no backend is chosen and no window can open, on a server, in CI or in a container alike.
"""

import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

ROC_FIGSIZE = (5, 5)  # square, as the curve's axes are
CV_FIGSIZE = (5.5, 4.5)
DPI = 100
# Without matplotlib's version stamp the same model gives the same bytes, so a committed copy changes only with it.
PNG_METADATA = {"Software": None}


def plot_roc(ax, y_true, y_score, label: str = "test"):
    """The ROC curve of y_score against y_true on ax, its AUC in the legend."""
    fpr, tpr, _ = roc_curve(y_true, y_score)
    ax.plot(fpr, tpr, label=f"{label} (AUC = {roc_auc_score(y_true, y_score):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random (AUC = 0.5)")
    ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", title="ROC curve")
    ax.set(xlabel="False positive rate (churn predicted, customer stayed)")
    ax.set(ylabel="True positive rate (recall)")
    ax.legend(loc="lower right")
    return ax


def plot_cv_auc(ax, aucs):
    """The validation AUC of each fold on ax, over a band of their mean ± standard deviation."""
    folds = np.arange(1, len(aucs) + 1)
    mean, std = np.mean(aucs), np.std(aucs)
    ax.axhspan(mean - std, mean + std, color="tab:blue", alpha=0.15, label=f"mean ± std = {mean:.3f} ± {std:.3f}")
    ax.axhline(mean, color="tab:blue", linewidth=1)
    ax.plot(folds, aucs, "o", color="tab:orange", label="fold AUC")
    for fold, auc in zip(folds, aucs, strict=True):
        ax.annotate(f"{auc:.3f}", (fold, auc), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    # Room above the highest label and below the band, so the legend covers neither.
    low, high = min(min(aucs), mean - std), max(max(aucs), mean + std)
    margin = max(high - low, 0.01)
    ax.set(xticks=folds, xlim=(0.5, len(aucs) + 0.5), ylim=(low - 0.6 * margin, high + 0.4 * margin))
    ax.set(xlabel="Fold", ylabel="Validation AUC", title="Cross-validation AUC by fold")
    ax.legend(loc="lower right")
    return ax


def _save(figure: Figure, path: Path) -> None:
    figure.savefig(path, dpi=DPI, metadata=PNG_METADATA)


def write_report(directory, metrics: dict, y_true, y_score) -> None:
    """Write metrics.json, roc.png (the test split) and cv_auc.png (metrics["cv_auc"]) into directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    roc = Figure(figsize=ROC_FIGSIZE, layout="constrained")
    plot_roc(roc.subplots(), y_true, y_score, label=f"test split, C={metrics['params']['C']}")
    _save(roc, directory / "roc.png")

    cv = Figure(figsize=CV_FIGSIZE, layout="constrained")
    ax = plot_cv_auc(cv.subplots(), metrics["cv_auc"])
    ax.set_title(f"{len(metrics['cv_auc'])}-fold cross-validation AUC, C={metrics['params']['C']}")
    _save(cv, directory / "cv_auc.png")
