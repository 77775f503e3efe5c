"""`monitor.py report`: the model's live performance from the prediction log, as report.json and report.html with
its plots as PNG files beside it (no script, no CDN: it opens from the folder, offline).

One row per prediction month (UTC) and model version: customers scored, outcomes known, and on those the metrics of
churn.monitor.performance; for every row, the AUC estimated from the probabilities alone (CBPE), which is what a
month without outcomes has. The estimate is valid for a calibrated model, so each row's calibration curve is shown.
"""

import datetime
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from churn.model.report import DPI, PNG_METADATA
from churn.monitor import performance
from churn.monitor.store import MATCHED_PREDICTION, Store

PREDICTIONS = (
    "SELECT prediction_id, predicted_at, model_version, probability, decision, challenger_probability FROM predictions"
)
# Each outcome's prediction; when several outcomes join one prediction, the last loaded counts.
OUTCOMES = f"SELECT {MATCHED_PREDICTION} AS prediction_id, o.churned, o.outcome_id FROM outcomes o"


def labelled_predictions(store: Store) -> pd.DataFrame:
    """Every logged prediction with its month and its outcome (churned: 1, 0, or NaN while unknown)."""
    store.unpack()
    columns = ["prediction_id", "at", "version", "p", "decision", "challenger_p"]
    predictions = pd.DataFrame(store.query(PREDICTIONS), columns=columns)
    outcomes = pd.DataFrame(store.query(OUTCOMES), columns=["prediction_id", "churned", "outcome_id"])
    outcomes = outcomes.dropna(subset=["prediction_id"]).sort_values("outcome_id")
    outcomes["prediction_id"] = outcomes["prediction_id"].astype(str)
    outcomes = outcomes.drop_duplicates("prediction_id", keep="last")[["prediction_id", "churned"]]
    predictions["prediction_id"] = predictions["prediction_id"].astype(str)
    predictions["month"] = pd.to_datetime(predictions["at"], utc=True, format="ISO8601").dt.strftime("%Y-%m")
    predictions["decision"] = predictions["decision"].astype(bool)
    predictions["p"] = predictions["p"].astype(float)
    predictions["challenger_p"] = predictions["challenger_p"].astype(float)  # NaN where no challenger scored
    labelled = predictions.merge(outcomes, on="prediction_id", how="left")
    labelled["churned"] = labelled["churned"].astype(float)
    return labelled


def group_report(month: str, version: str, group: pd.DataFrame) -> dict:
    known = group[group["churned"].notna()]
    row = {
        "month": month,
        "model_version": version,
        "customers": len(group),
        "outcomes": len(known),
        "estimated_auc": performance.estimated_auc(group["p"].to_numpy()),
    }
    if len(known):
        y = known["churned"].to_numpy().astype(int)
        row |= performance.summary(y, known["p"].to_numpy(), known["decision"].to_numpy())
        # The shadow challenger on the same customers (churn.monitor.challenger), where it scored them all.
        if known["challenger_p"].notna().all():
            row["challenger_auc"] = performance.auc(y, known["challenger_p"].to_numpy())
    return row


def build_report(store: Store) -> dict:
    labelled = labelled_predictions(store)
    groups = [
        group_report(month, version, group)
        for (month, version), group in labelled.groupby(["month", "version"], sort=True)
    ]
    return {
        "generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "store": store.dialect.partition(":")[0],
        "groups": groups,
    }


def plot_calibration(row: dict) -> Figure:
    figure = Figure(figsize=(4.5, 4.5), layout="constrained")
    ax = figure.subplots()
    points = [b for b in row["calibration"] if b["customers"]]
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="calibrated")
    ax.plot([b["mean_probability"] for b in points], [b["churn_rate"] for b in points], "o-", label="this month")
    ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", xlabel="Mean churn probability", ylabel="Share who churned")
    ax.set_title(f"Calibration, {row['month']}, model {row['model_version']}", fontsize=10)
    ax.legend(loc="upper left")
    return figure


def plot_auc(groups: list[dict]) -> Figure:
    figure = Figure(figsize=(7, 4), layout="constrained")
    ax = figure.subplots()
    for version in sorted({g["model_version"] for g in groups}):
        rows = [g for g in groups if g["model_version"] == version]
        months = [g["month"] for g in rows]
        ax.plot(months, [g["estimated_auc"] for g in rows], "s--", label=f"{version} estimated (CBPE)")
        known = [g for g in rows if "auc" in g and g["auc"] == g["auc"]]
        if known:
            low = [g["auc"] - g["auc_95"][0] for g in known]
            high = [g["auc_95"][1] - g["auc"] for g in known]
            x = [g["month"] for g in known]
            ax.errorbar(x, [g["auc"] for g in known], yerr=[low, high], fmt="o-", capsize=4, label=f"{version} AUC")
    ax.set(ylabel="ROC AUC", xlabel="Prediction month", title="AUC by month: measured (95 % interval) and estimated")
    ax.legend(loc="lower left", fontsize=8)
    return figure


def number(value, digits: int = 3) -> str:
    return "–" if value is None or value != value else f"{value:.{digits}f}"


COLUMNS = [
    ("Month", lambda g: g["month"]),
    ("Model", lambda g: g["model_version"]),
    ("Scored", lambda g: str(g["customers"])),
    ("Outcomes", lambda g: str(g["outcomes"])),
    ("AUC", lambda g: number(g.get("auc"))),
    ("AUC 95 %", lambda g: f"{number(g['auc_95'][0])}–{number(g['auc_95'][1])}" if "auc_95" in g else "–"),
    ("Estimated AUC", lambda g: number(g["estimated_auc"])),
    ("Challenger's AUC", lambda g: number(g.get("challenger_auc"))),
    ("Brier", lambda g: number(g.get("brier"))),
    ("Precision", lambda g: number(g.get("precision"))),
    ("Recall", lambda g: number(g.get("recall"))),
    ("Top-decile lift", lambda g: number(g.get("top_decile_lift"), 2)),
]


def html_page(report: dict, plots: dict[int, str]) -> str:
    head = "".join(f"<th>{name}</th>" for name, _ in COLUMNS)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell(g))}</td>" for _, cell in COLUMNS) + "</tr>" for g in report["groups"]
    )
    calibrations = "".join(f'<img src="{name}" alt="calibration curve {i}">' for i, name in plots.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Churn model: live performance</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}img{{margin:.5em}}</style></head>
<body><h1>Churn model: live performance</h1>
<p>Generated {html.escape(report["generated_at"])} from the prediction log ({html.escape(report["store"])}).
Metrics are on the customers whose outcome is known; the estimated AUC uses the probabilities alone
(confidence-based performance estimation), valid while the model is calibrated: the curves below show whether it is.
Precision and recall are at the service's threshold; the lift compares the top tenth by probability with all.</p>
<table><tr>{head}</tr>{rows}</table>
<h2>AUC by month</h2><img src="auc.png" alt="AUC by month">
<h2>Calibration</h2>{calibrations}
</body></html>
"""


def write_report(store: Store, directory: Path) -> dict:
    """report.json, report.html and its plots in directory; the report."""
    directory.mkdir(parents=True, exist_ok=True)
    report = build_report(store)
    (directory / "report.json").write_text(json.dumps(json_safe(report), indent=2) + "\n")
    plots = {}
    for i, row in enumerate(report["groups"]):
        if row.get("calibration"):
            plots[i] = f"calibration-{row['month']}-{row['model_version']}.png"
            plot_calibration(row).savefig(directory / plots[i], dpi=DPI, metadata=PNG_METADATA)
    plot_auc(report["groups"]).savefig(directory / "auc.png", dpi=DPI, metadata=PNG_METADATA)
    (directory / "report.html").write_text(html_page(report, plots))
    return report


def json_safe(value):
    """NaN (a metric without both classes) as null: JSON has no NaN."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return None if isinstance(value, float) and np.isnan(value) else value
