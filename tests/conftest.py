import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from churn.model.data import DataError, load_data
from churn.model.scoring import load_served_model
from churn.serve.app import create_app
from churn.settings import Settings
from devtools import MODEL_FILE, ROOT, free_port, gunicorn_command, running_server, waitress_command
from devtools import dataset_path as find_dataset

LIMITS = {"CHURN_MAX_CUSTOMERS": "5", "CHURN_MAX_BODY_BYTES": "4096", "CHURN_THRESHOLD": "0.3"}


@dataclass
class Server:
    kind: str
    url: str
    stdout: Path

    def log_lines(self) -> list[dict]:
        """Every line the server wrote to stdout, each of which must be a JSON object."""
        entries = []
        for line in self.stdout.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                pytest.fail(f"{self.kind} wrote a line that is not JSON: {line!r}")
            assert isinstance(entries[-1], dict)
        return entries

    def access_lines(self, request_ids: list[str]) -> dict[str, list[dict]]:
        """The access lines of these requests, by request ID (waiting a little for the last ones)."""
        deadline = time.monotonic() + 5
        while True:
            found = {rid: [] for rid in request_ids}
            for entry in self.log_lines():
                if entry.get("logger") == "churn.access" and entry.get("request_id") in found:
                    found[entry["request_id"]].append(entry)
            if all(found.values()) or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


@pytest.fixture(scope="module", params=["gunicorn", "waitress"])
def server(request, tmp_path_factory):
    """Real gunicorn (2 workers) and real waitress, each started with LIMITS set by environment and its stdout
    kept: one server of each kind per test module."""
    tmp = tmp_path_factory.mktemp(request.param)
    port = free_port()
    if request.param == "gunicorn":
        (tmp / "metrics").mkdir()
        # gunicorn's own (plain text) log goes to a file, so stdout holds only what the app writes.
        command = [*gunicorn_command(port), "--error-logfile", str(tmp / "gunicorn.log")]
        env = {**LIMITS, "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics")}
    else:
        # One process: no multiprocess directory, even if this test process has one.
        command = ["env", "-u", "PROMETHEUS_MULTIPROC_DIR", *waitress_command(port)]
        env = LIMITS
    with running_server(command, port, env=env, log_path=tmp / "stdout.log") as (url, _):
        yield Server(request.param, url, tmp / "stdout.log")


@pytest.fixture(scope="session")
def dataset_path() -> Path:
    try:
        return find_dataset()
    except DataError as e:
        pytest.fail(str(e))


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


@pytest.fixture(scope="module")
def explain_reference(clean_df):
    """The committed model as scikit-learn objects, the training split it was fitted on, and every row's log-odds."""
    from churn.model.training import encode, load_model, split

    dv, model = load_model(MODEL_FILE)
    X_train = encode(split(clean_df)[0], dv)
    X_all = encode(clean_df, dv)
    return dv, model, X_train, X_all, model.decision_function(X_all)


# ---- Batch scoring (tests/unit/test_batch.py, tests/integration/test_batch_score_py.py)


@pytest.fixture(scope="module")
def raw_text(dataset_path):
    """The dataset with every value as text."""
    from tests.helpers import read_text_csv

    return read_text_csv(dataset_path)


@pytest.fixture(scope="module")
def expected(clean_df):
    """scikit-learn's churn probability of every row of the dataset (the committed model)."""
    from churn.model.training import load_model, predict

    dv, model = load_model(MODEL_FILE)
    return predict(clean_df, dv, model)


@pytest.fixture(scope="session")
def big_files(tmp_path_factory, dataset_path):
    """The dataset repeated to 100,000 and 500,000 rows, as CSV."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    folder = tmp_path_factory.mktemp("big")
    table = pacsv.read_csv(dataset_path)
    files = {}
    for rows in (100_000, 500_000):
        files[rows] = folder / f"customers-{rows}.csv"
        pacsv.write_csv(pa.concat_tables([table] * -(-rows // table.num_rows)).slice(0, rows), files[rows])
    return files


@pytest.fixture(scope="session")
def other_model(tmp_path_factory) -> Path:
    """A second real model with its sidecar, trained by train.py at C=0.1: what a reload or a challenger serves."""
    from devtools import train_model

    return train_model(tmp_path_factory.mktemp("other-model") / "model_C=0.1.bin", C=0.1)
