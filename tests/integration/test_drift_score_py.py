"""score.py --drift on both engines: the dataset against its own training split is stable, a base of only
month-to-month fiber customers drifts where it should, and local and Spark count the same customers."""

import pandas as pd
import pytest

from churn.monitor.drift import SCORE, TABLE_COLUMNS
from tests.helpers import read_text_csv, run_score

ENGINES = {"local": [], "spark": ["--engine", "spark", "--master", "local[2]"]}


@pytest.fixture(scope="module")
def drifted_file(tmp_path_factory, dataset_path):
    """The dataset's month-to-month fiber customers, as the dataset writes them."""
    raw = read_text_csv(dataset_path)
    path = tmp_path_factory.mktemp("drifted") / "fiber_month_to_month.csv"
    raw[(raw.Contract == "Month-to-month") & (raw.InternetService == "Fiber optic")].to_csv(path, index=False)
    return path


def drift_run(engine: str, input_path, folder) -> pd.DataFrame:
    folder.mkdir()
    table, output = folder / "drift.csv", folder / "scored.csv"  # Spark's output: a folder of that name
    run = run_score(input_path, "--output", output, "--drift", table, *ENGINES[engine])
    assert run.returncode == 0, run.stderr
    assert f"the table is in {table}" in run.stdout
    frame = pd.read_csv(table, dtype={"bin": str, "range": str})
    assert tuple(frame.columns) == TABLE_COLUMNS
    return frame


def psi_of(table: pd.DataFrame) -> pd.Series:
    return table.groupby("feature", sort=False)["psi"].first()


@pytest.mark.parametrize("engine", [pytest.param(e, marks=[pytest.mark.spark] * (e == "spark")) for e in ENGINES])
def test_drift_tables(engine, dataset_path, drifted_file, tmp_path):
    own = drift_run(engine, dataset_path, tmp_path / "own")
    assert (psi_of(own) < 0.1).all(), psi_of(own)
    assert set(own.level) == {"stable"}
    assert own.groupby("feature")["customers"].sum().eq(7043).all()

    table = drift_run(engine, drifted_file, tmp_path / "drifted")
    psi = psi_of(table)
    assert list(psi) == sorted(psi, reverse=True)  # the largest first
    assert psi["contract"] > 0.25 and psi["internetservice"] > 0.25 and psi[SCORE] > 0.25
    assert psi["gender"] < 0.1
    levels = table.groupby("feature")["level"].first()
    assert levels["contract"] == levels["internetservice"] == "significant" and levels["gender"] == "stable"
    contract = table[table.feature == "contract"].set_index("bin")
    raw = read_text_csv(drifted_file)
    assert contract.customers.to_dict() == {"month-to-month": len(raw), "one_year": 0, "two_year": 0}
    gender = table[table.feature == "gender"].set_index("bin")
    counted = raw.gender.str.lower().value_counts()
    assert gender.customers.to_dict() == {"female": counted["female"], "male": counted["male"]}
    assert gender.share.sum() == pytest.approx(1) and gender.reference_share.sum() == pytest.approx(1)
