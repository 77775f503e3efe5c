import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from churn.data import DATA_FILE_NAME, load_data
from churn.scoring import load_served_model
from churn.service import Settings, create_app

ROOT = Path(__file__).resolve().parent.parent
MODEL_FILE = ROOT / "model_C=1.0.bin"


def data_path() -> Path:
    """The real dataset: $CHURN_DATA, else ../shared/data beside the clone, else data/."""
    candidates = [
        os.environ.get("CHURN_DATA"),
        ROOT.parent / "shared" / "data" / DATA_FILE_NAME,
        ROOT / "data" / DATA_FILE_NAME,
    ]
    for candidate in filter(None, candidates):
        if Path(candidate).exists():
            return Path(candidate)
    pytest.fail(f"the dataset {DATA_FILE_NAME} is not in $CHURN_DATA, ../shared/data or data/")


@pytest.fixture(scope="session")
def dataset_path() -> Path:
    return data_path()


@pytest.fixture(scope="session")
def raw_df(dataset_path):
    import pandas as pd

    return pd.read_csv(dataset_path)


@pytest.fixture(scope="session")
def clean_df(dataset_path):
    return load_data(dataset_path)


@pytest.fixture(scope="session")
def served_model():
    return load_served_model(MODEL_FILE)


@pytest.fixture
def settings():
    return Settings()


@pytest.fixture
def app(served_model, settings):
    app = create_app(served_model, settings)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app):
    return app.test_client()


# `python -W error::sklearn.exceptions.ConvergenceWarning` is ignored with only a notice: -W is read before
# site-packages is importable. So the filter is set here, train.py runs as __main__ after it, and the modules
# the run imported are printed last.
RUN_TRAIN_PY = """
import json, runpy, sys, warnings
from sklearn.exceptions import ConvergenceWarning
warnings.simplefilter("error", ConvergenceWarning)
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
print(json.dumps(sorted(m for m in sys.modules if m.startswith("matplotlib"))))
"""


@dataclass(frozen=True)
class TrainRun:
    stdout: str
    stderr: str
    model: Path
    report: Path


@pytest.fixture(scope="session")
def train_run(dataset_path, tmp_path_factory) -> TrainRun:
    """One real `train.py --report` run on the real data, shared by the tests that read what it makes."""
    out = tmp_path_factory.mktemp("train")
    model, report = out / "model.bin", out / "report"
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            RUN_TRAIN_PY,
            "--data",
            str(dataset_path),
            "--output",
            str(model),
            "--report",
            str(report),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    return TrainRun(run.stdout, run.stderr, model, report)
