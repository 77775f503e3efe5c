"""churn.batch.spark on real Spark in local mode: the dataset as scikit-learn scores it, the same rejects as the local
engine (row numbers and neutralised cells included), score.py --engine spark in process, quiet, and under
spark-submit."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn.batch.chunks import InputError, score_file
from churn.batch.spark import read_frame, score_frame, score_path, session
from churn.model.training import load_model, predict
from tests.conftest import MODEL_FILE, ROOT
from tests.helpers import TOLERANCE, read_text_csv, write_bad_rows
from tests.integration.test_batch_files import ragged_lines, write_lines

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def spark():
    spark = session("local[2]")
    spark.conf.set("spark.sql.shuffle.partitions", "2")
    yield spark
    spark.stop()


@pytest.fixture(scope="module")
def bad_rows(tmp_path_factory, dataset_path, served_model):
    """The bad-rows file that score.py's tests use (tests/helpers.py), and what the local engine makes of it."""
    folder = tmp_path_factory.mktemp("bad")
    write_bad_rows(read_text_csv(dataset_path), folder / "customers.csv")
    summary = score_file(folder / "customers.csv", folder / "local.csv", served_model)
    assert (summary.read, summary.scored, summary.rejected) == (20, 15, 5)
    scores = pd.read_csv(folder / "local.csv", dtype={"customerID": str})
    rejects = read_text_csv(folder / "local.rejects.csv")
    return folder / "customers.csv", scores, rejects


def parts(folder: Path, read) -> pd.DataFrame:
    """A folder Spark wrote, as one frame."""
    return pd.concat([read(part) for part in sorted(folder.glob("part-*"))], ignore_index=True)


def rows(df: pd.DataFrame) -> list:
    return sorted(df.fillna("").astype(str).values.tolist())


def test_probabilities_equal_predict_proba(spark, dataset_path, raw_df, clean_df):
    df = read_frame(spark, dataset_path)
    scored, rejected = score_frame(df, MODEL_FILE)
    kept = [c for c in df.columns if c != "Churn"]  # the label, which Spark cannot tell from churn
    assert scored.columns == kept + ["churn_probability", "churn"]
    assert rejected.count() == 0
    got = dict(scored.select("customerID", "churn_probability").collect())
    probabilities = np.array([got[customer] for customer in raw_df["customerID"]])
    dv, model = load_model(MODEL_FILE)
    assert np.abs(probabilities - predict(clean_df, dv, model)).max() <= TOLERANCE


def test_rejects_and_scores_equal_the_local_engines(spark, served_model, bad_rows):
    path, local_scores, local_rejects = bad_rows
    scored, rejected = score_frame(read_frame(spark, path), served_model, keep=["customerID"])
    assert rows(rejected.toPandas()) == rows(local_rejects.drop(columns=["row"]))  # score_frame numbers no rows
    spark_scores = scored.toPandas().set_index("customerID").loc[local_scores["customerID"]]
    assert spark_scores["churn_probability"].tolist() == local_scores["churn_probability"].tolist()
    assert spark_scores["churn"].tolist() == local_scores["churn"].tolist()


def test_reasons_equal_the_local_engines(spark, tmp_path, dataset_path, served_model):
    from churn.model.explain import make_explainer

    explainer = make_explainer(served_model)
    assert score_file(dataset_path, tmp_path / "local.csv", served_model, explainer=explainer, reasons=2).scored == 7043
    scored, _ = score_frame(read_frame(spark, dataset_path), served_model, keep=["customerID"], reasons=2)
    assert rows(scored.toPandas()) == rows(pd.read_csv(tmp_path / "local.csv", dtype={"customerID": str}))


def test_a_missing_column_fails_before_any_job(spark, dataset_path):
    df = read_frame(spark, dataset_path).drop("Contract")
    with pytest.raises(InputError, match="no column for Contract"):
        score_frame(df, MODEL_FILE)


def test_score_path_writes_both_folders(spark, tmp_path, bad_rows):
    path, local_scores, local_rejects = bad_rows
    summary = score_path(path, tmp_path / "scores.parquet", MODEL_FILE, master="local[2]")
    assert (summary.read, summary.scored, summary.rejected) == (20, 15, 5)
    scores = parts(tmp_path / "scores.parquet", pd.read_parquet).set_index("customerID")
    probabilities = scores.loc[local_scores["customerID"], "churn_probability"]
    assert probabilities.tolist() == local_scores["churn_probability"].tolist()
    rejects = parts(tmp_path / "scores.rejects.csv", read_text_csv)
    assert list(rejects.columns) == list(local_rejects.columns)  # row, customerID, field, value, message, allowed
    assert rows(rejects) == rows(local_rejects)


def test_spark_submit_runs_score_py(tmp_path, bad_rows):
    """The cluster command of the README, with a local master: spark-submit sets it, score.py takes it."""
    path, local_scores, _ = bad_rows
    command = [Path(sys.executable).parent / "spark-submit", "--master", "local[2]"]
    for setting in ("spark.driver.host=127.0.0.1", "spark.driver.bindAddress=127.0.0.1", "spark.ui.enabled=false"):
        command += ["--conf", setting]
    command += ["score.py", "--engine", "spark", path, "--output", tmp_path / "scores.csv"]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    run = subprocess.run(list(map(str, command)), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stderr[-3000:]
    assert run.stdout.splitlines()[-1].startswith("20 rows read, 15 scored, 5 rejected in "), run.stdout
    scores = parts(tmp_path / "scores.csv", lambda part: pd.read_csv(part, dtype={"customerID": str}))
    assert scores["customerID"].tolist() == local_scores["customerID"].tolist()
    assert scores["churn_probability"].tolist() == local_scores["churn_probability"].tolist()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, dataset_path, served_model):
    """The bad-rows file with ids a spreadsheet would run as formulas, semicolon-separated with decimal commas, and
    the local engine's CSV files of it."""
    folder = tmp_path_factory.mktemp("hostile")
    df = write_bad_rows(read_text_csv(dataset_path), folder / "customers.csv")
    df.loc[[0, 2, 4], "customerID"] = ["=1+2", "@SUM(A1)", "-5"]  # scored, rejected, rejected
    for column in ("SeniorCitizen", "tenure", "MonthlyCharges", "TotalCharges"):  # one 1.5 would leave it unclear
        df[column] = df[column].str.replace(".", ",")
    df.to_csv(folder / "customers.csv", index=False, sep=";")
    summary = score_file(folder / "customers.csv", folder / "local.csv", served_model)
    assert (summary.read, summary.scored, summary.rejected) == (20, 15, 5)
    return folder


def run_spark_score(*args):
    command = [sys.executable, "score.py", "--engine", "spark", "--master", "local[1]", *args]
    return subprocess.run(list(map(str, command)), cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_score_py_on_spark_is_quiet_and_writes_what_the_local_engine_does(tmp_path, hostile):
    run = run_spark_score(hostile / "customers.csv", "--output", tmp_path / "scores.csv")
    assert run.returncode == 1, run.stderr[-3000:]
    assert run.stderr == ""  # Spark's own log is in a file: the summary is the only line
    assert run.stdout.startswith("20 rows read, 15 scored, 5 rejected in "), run.stdout
    rejects = parts(tmp_path / "scores.rejects.csv", read_text_csv)
    local_rejects = read_text_csv(hostile / "local.rejects.csv")
    assert "'@SUM(A1)" in rejects["customerID"].tolist()
    assert rejects.values.tolist() == local_rejects.values.tolist()  # in row order, neutralised alike
    scores = parts(tmp_path / "scores.csv", read_text_csv)
    local_scores = read_text_csv(hostile / "local.csv")
    assert scores["customerID"].tolist() == local_scores["customerID"].tolist()
    assert scores["customerID"][0] == "'=1+2"
    assert (
        scores["churn_probability"].astype(float).tolist() == local_scores["churn_probability"].astype(float).tolist()
    )


def test_verbose_shows_sparks_log(tmp_path, hostile):
    run = run_spark_score(hostile / "customers.csv", "--output", tmp_path / "scores.parquet", "--verbose")
    assert run.returncode == 1, run.stderr[-3000:]
    assert "WARN" in run.stderr or "log4j" in run.stderr, run.stderr
    assert run.stdout.startswith("20 rows read, 15 scored, 5 rejected in "), run.stdout


@pytest.mark.parametrize("ids", [True, False])
def test_ragged_rows_are_rejected_as_the_local_engine_rejects_them(spark, tmp_path, dataset_path, served_model, ids):
    text = read_text_csv(dataset_path)
    write_lines(tmp_path / "customers.csv", ragged_lines(text if ids else text.drop(columns=["customerID"])))
    local = score_file(tmp_path / "customers.csv", tmp_path / "local.csv", served_model)
    summary = score_path(tmp_path / "customers.csv", tmp_path / "spark.csv", MODEL_FILE, master="local[2]")
    assert (summary.read, summary.scored, summary.rejected) == (local.read, local.scored, local.rejected) == (20, 17, 3)
    rejects = parts(tmp_path / "spark.rejects.csv", read_text_csv)
    assert rows(rejects) == rows(read_text_csv(tmp_path / "local.rejects.csv"))
    assert sorted(rejects["row"].astype(int)) == [4, 9, 20]
    scores, local_scores = parts(tmp_path / "spark.csv", read_text_csv), read_text_csv(tmp_path / "local.csv")
    assert list(scores.columns) == list(local_scores.columns)
    assert scores.iloc[:, 0].tolist() == local_scores.iloc[:, 0].tolist()  # the ids, or the rows' numbers
    probabilities = scores["churn_probability"].astype(float)
    assert probabilities.tolist() == local_scores["churn_probability"].astype(float).tolist()


def test_score_py_on_spark_takes_urls_as_typed_and_leaves_no_log_behind(tmp_path, hostile):
    """A URL reaches Spark as typed, with the outputs beside it (a Path would have made file:///x file:/x, and
    s3a://bucket/x s3a:/bucket/x); after a run that succeeds, Spark's own log is gone."""
    shutil.copy(hostile / "customers.csv", tmp_path / "customers.csv")
    url = f"file://{tmp_path}/customers.csv"
    logs_before = set(Path(tempfile.gettempdir()).glob("churn-spark-*"))
    run = run_spark_score(url, "--sep", ";", "--decimal", ",")
    assert run.returncode == 1, run.stderr[-3000:]
    scored = f"file://{tmp_path}/customers.scored.csv"
    assert f"scores in {scored}, rejects in file://{tmp_path}/customers.scored.rejects.csv" in run.stdout
    scores = parts(tmp_path / "customers.scored.csv", read_text_csv)
    local_scores = read_text_csv(hostile / "local.csv")
    assert scores["customerID"].tolist() == local_scores["customerID"].tolist()
    assert set(Path(tempfile.gettempdir()).glob("churn-spark-*")) <= logs_before


def test_the_local_engine_refuses_a_url_saying_which_engine_reads_it(tmp_path):
    run = subprocess.run(
        [sys.executable, "score.py", "s3a://bucket/customers.csv"], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 2
    assert (
        run.stderr == "error: s3a://bucket/customers.csv: a URL is read and written by --engine spark; the local "
        "engine takes files\n"
    )
