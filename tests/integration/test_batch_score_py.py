"""score.py as a process: the whole dataset as scikit-learn scores it, rejects, CSV and Parquet, streaming in constant
memory, the progress bar and the exit status."""

import os
import pty
import select
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churn.batch import chunks as batch
from churn.model.explain import make_explainer
from churn.model.schema import Problems, clean_customer
from churn.model.training import load_model
from devtools import MODEL_FILE, ROOT
from tests.helpers import BLANK_TOTAL_ROW, TOLERANCE, message, read_text_csv, run_score, write_bad_rows


def test_every_row_equals_predict_proba(tmp_path, dataset_path, raw_text, expected):
    output = tmp_path / "scores.csv"
    run = run_score(dataset_path, "--output", output)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""  # no progress bar when stderr is not a terminal
    assert run.stdout.startswith("7,043 rows read, 7,043 scored, 0 rejected in ")
    assert "rows/s" in run.stdout
    scores = pd.read_csv(output, dtype={"customerID": str})
    assert list(scores.columns) == ["customerID", "churn_probability", "churn"]
    assert scores["customerID"].tolist() == raw_text["customerID"].tolist()
    assert np.abs(scores["churn_probability"].to_numpy() - expected).max() <= TOLERANCE
    assert scores["churn"].tolist() == (expected >= 0.5).tolist()
    assert read_text_csv(tmp_path / "scores.rejects.csv").shape == (0, 6)


def test_bad_rows_are_rejected_with_the_api_messages(tmp_path, raw_text, expected):
    source = write_bad_rows(raw_text, tmp_path / "customers.csv")
    run = run_score(tmp_path / "customers.csv")  # default output: beside the input
    assert run.returncode == 1, run.stderr
    assert run.stdout.startswith("20 rows read, 15 scored, 5 rejected in ")
    rejects = read_text_csv(tmp_path / "customers.scored.rejects.csv")
    assert list(rejects.columns) == ["row", "customerID", "field", "value", "message", "allowed"]
    assert rejects.values.tolist() == [
        [str(row), source.loc[row - 1, "customerID"], column, text, message(column, text), allowed]
        for (row, column), text, allowed in [
            ((3, "gender"), "robot", "female | male"),
            ((5, "tenure"), "-1", "whole number from 0 to 1200"),
            ((5, "MonthlyCharges"), "abc", "number from 0 to 100000"),
            ((10, "SeniorCitizen"), "1.5", "whole number from 0 to 1"),
            ((12, "Contract"), "", "month-to-month | one_year | two_year"),
            ((15, "TotalCharges"), "1e9", "number from 0 to 100000000, blank is 0"),
        ]
    ]
    scores = pd.read_csv(tmp_path / "customers.scored.csv", dtype={"customerID": str})
    kept = [row - 1 for row in range(1, 21) if row not in {3, 5, 10, 12, 15}]
    assert scores["customerID"].tolist() == source.loc[kept, "customerID"].tolist()
    blank = kept.index(BLANK_TOTAL_ROW - 1)  # scored as TotalCharges 0, which the dataset's " " also means
    blank_as_zero = predict_one(raw_text.loc[BLANK_TOTAL_ROW - 1].to_dict() | {"TotalCharges": 0})
    assert scores["churn_probability"][blank] == pytest.approx(blank_as_zero, abs=TOLERANCE)
    others = [i for i, row in enumerate(kept) if row != BLANK_TOTAL_ROW - 1]
    got = scores["churn_probability"].to_numpy()[others]
    assert np.abs(got - expected[[kept[i] for i in others]]).max() <= TOLERANCE


def predict_one(row: dict) -> float:
    dv, model = load_model(MODEL_FILE)
    customer = clean_customer(row, Problems())
    return model.predict_proba(dv.transform([customer]))[0, 1]


def test_parquet_with_typed_columns_and_nulls(tmp_path, raw_df, expected):
    df = raw_df.copy()  # pandas' types: whole numbers and floats as numbers, TotalCharges as text
    df.loc[1, "Contract"] = None
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "customers.parquet")
    run = run_score(tmp_path / "customers.parquet")
    assert run.returncode == 1, run.stderr
    rejects = read_text_csv(tmp_path / "customers.scored.rejects.csv")
    assert rejects[["row", "field", "value", "message"]].values.tolist() == [
        ["2", "Contract", "", message("Contract", None)]
    ]
    scores = pq.read_table(tmp_path / "customers.scored.parquet").to_pandas()
    assert len(scores) == 7042
    assert np.abs(scores["churn_probability"].to_numpy() - np.delete(expected, 1)).max() <= TOLERANCE


def test_a_missing_column_fails_before_any_output(tmp_path, raw_text):
    raw_text.drop(columns=["Contract", "tenure"]).to_csv(tmp_path / "customers.csv", index=False)
    run = run_score(tmp_path / "customers.csv")
    assert run.returncode == 2
    assert "no column for tenure, Contract" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["customers.csv"]


def test_ids_threshold_and_output_names(tmp_path, raw_text, expected):
    raw_text.head(50).drop(columns=["customerID"]).to_csv(tmp_path / "customers.csv", index=False)
    assert run_score(tmp_path / "customers.csv", "--id-column", "account").returncode == 2  # named, so required
    run = run_score(tmp_path / "customers.csv", "--threshold", "0.3", "--output", tmp_path / "out" / "s.parquet")
    assert run.returncode == 0, run.stderr
    scores = pq.read_table(tmp_path / "out" / "s.parquet").to_pandas()
    assert scores["row"].tolist() == list(range(1, 51))  # no id column: the row numbers say which is which
    assert scores["churn"].tolist() == (expected[:50] >= 0.3).tolist()
    assert (tmp_path / "out" / "s.rejects.csv").exists()
    assert run_score(tmp_path / "customers.csv", "--threshold", "1.5").returncode == 2


def test_an_empty_input_gives_empty_files(tmp_path, raw_text):
    raw_text.head(0).to_csv(tmp_path / "customers.csv", index=False)
    run = run_score(tmp_path / "customers.csv")
    assert run.returncode == 0, run.stderr
    header = read_text_csv(tmp_path / "customers.scored.csv").columns.tolist()
    assert header == ["customerID", batch.PROBABILITY, batch.DECISION]


def test_explain_adds_the_top_reasons(tmp_path, dataset_path, served_model, raw_df):
    run = run_score(dataset_path, "--output", tmp_path / "s.csv", "--explain", 2)
    assert run.returncode == 0, run.stderr
    scores = read_text_csv(tmp_path / "s.csv")
    customers = [clean_customer(row, Problems()) for row in raw_df.head(200).to_dict(orient="records")]
    explanations = make_explainer(served_model).explain(customers)
    for i, explanation in enumerate(explanations):
        texts = [reason["text"] for reason in explanation["reasons"][:2]]
        assert scores.loc[i, ["reason_1", "reason_2"]].tolist() == texts + [""] * (2 - len(texts))


# VmHWM is this process image's peak; getrusage's ru_maxrss would include the forking parent's (pytest's) memory.
PEAK_RSS = """
import runpy, sys
sys.argv = ["score.py", *sys.argv[1:]]
try:
    runpy.run_path("score.py", run_name="__main__")
finally:
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    print(status["VmHWM"].split()[0], file=sys.stderr)
"""


def test_memory_does_not_grow_with_the_rows(tmp_path, big_files):
    peaks = {}
    for rows, path in big_files.items():
        run = subprocess.run(
            [sys.executable, "-c", PEAK_RSS, path, "--output", tmp_path / f"{rows}.csv"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith(f"{rows:,} rows read, {rows:,} scored")
        peaks[rows] = int(run.stderr.split()[-1])  # KiB
    print(f"peak RSS: {peaks[100_000] / 1024:.0f} MiB for 100,000 rows, {peaks[500_000] / 1024:.0f} MiB for 500,000")
    assert peaks[500_000] <= 1.1 * peaks[100_000]


def test_progress_bar_on_a_terminal(tmp_path, big_files):
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "score.py", big_files[500_000], "--output", tmp_path / "s.csv"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=terminal,
    )
    os.close(terminal)
    shown = b""
    while True:  # read until the process closes the terminal
        ready, _, _ = select.select([controller], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(controller, 4096)
        except OSError:  # EIO: the other side is closed
            break
        if not data:
            break
        shown += data
    assert process.wait(timeout=60) == 0
    os.close(controller)
    lines = shown.decode().split("\r")
    bars = [line for line in lines if "rows/s" in line]
    assert bars, shown
    assert all(" left" in bar and " rows " in bar for bar in bars)
    assert process.stdout.read().decode().startswith("500,000 rows read")
