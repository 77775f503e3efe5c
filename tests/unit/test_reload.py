"""churn.serve.reload in one process (what gunicorn.conf.py's on_reload hook calls in the master on SIGHUP): a new
model file serves once it passes, and one that does not leaves the old model serving, saying why.
tests/integration/test_load_faults.py does the same through real gunicorn, under load."""

import gc
import logging
import weakref

import numpy as np
import pytest

from churn.model.modelfile import sidecar_path
from churn.model.scoring import load_served_model
from churn.model.training import load_model, save_model
from churn.serve.app import create_app
from churn.serve.reload import reload_model
from churn.serve.routes import PREDICTOR
from churn.settings import Settings
from devtools import MODEL_FILE, replace_model
from tests.helpers import customers, without_ids

BATCH = customers(20)


@pytest.fixture
def served(tmp_path):
    """A service whose MODEL_FILE is a copy of the repository's model, free to be replaced."""
    path = tmp_path / MODEL_FILE.name
    replace_model(MODEL_FILE, path)
    return path, create_app(load_served_model(path), Settings(model_file=path))


def answers(app) -> tuple[str, bytes]:
    response = app.test_client().post("/predict", json=BATCH)
    assert response.status_code == 200
    return response.headers["X-Model-Version"], without_ids(response.data)  # each answer's id is its own


def test_a_new_model_serves_after_the_reload_and_the_old_one_is_freed(served, other_model):
    path, app = served
    before = answers(app)
    replace_model(other_model, path)
    old = weakref.ref(app.extensions[PREDICTOR])
    gc.freeze()  # as predict.py does
    assert reload_model(app)
    assert old() is None
    version, body = answers(app)
    assert version == load_served_model(other_model).version != before[0]
    # The answers are the new model's: those a service started on it gives.
    assert body == answers(create_app(load_served_model(other_model)))[1] != before[1]
    client = app.test_client()
    assert client.get("/model").get_json()["version"] == version
    assert client.get("/health/ready").get_json() == {"status": "ready", "model_version": version, "detail": []}


def damaged(path):
    path.write_bytes(path.read_bytes()[:300])


def without_sidecar(path):
    sidecar_path(path).unlink()


def another_models_sidecar(path):
    """A model retrained at another C, beside the old model's sidecar."""
    dv, model = load_model(path)
    model.set_params(C=0.5)
    save_model(path, dv, model)


def scoring_nan(path):
    dv, model = load_model(path)
    model.intercept_ = np.array([np.nan])
    save_model(path, dv, model)


@pytest.mark.parametrize(
    ("breaks", "reason"),
    [
        (damaged, "truncated"),
        (without_sidecar, "sidecar model_C=1.0.bin.json is missing"),
        (another_models_sidecar, "records C=1.0, the model has C=0.5"),
        (scoring_nan, "warm-up"),
    ],
    ids=lambda x: getattr(x, "__name__", None),
)
def test_a_file_that_does_not_pass_leaves_the_old_model_serving_and_says_why(
    served, other_model, breaks, reason, caplog
):
    path, app = served
    replace_model(other_model, path)
    assert reload_model(app)
    serving = answers(app)
    replace_model(MODEL_FILE, path)
    breaks(path)
    caplog.clear()  # the passing reload above logs at INFO where another test set the level so
    with caplog.at_level(logging.ERROR, logger="churn.serve.reload"):
        assert not reload_model(app)
    assert answers(app) == serving
    (problem,) = app.test_client().get("/health/ready").get_json()["detail"]
    assert problem.startswith(f"reload refused, version {serving[0]} still serves: model file {path}")
    assert reason in problem
    assert [record.getMessage() for record in caplog.records] == [problem]
    # A second refusal replaces the first reason; a reload that passes clears it.
    assert not reload_model(app)
    assert len(app.test_client().get("/health/ready").get_json()["detail"]) == 1
    replace_model(MODEL_FILE, path)
    assert reload_model(app)
    assert app.test_client().get("/health/ready").get_json()["detail"] == []
    assert answers(app)[0] == load_served_model(MODEL_FILE).version


def test_the_challenger_is_loaded_again_with_the_model(served, other_model, tmp_path):
    path, app = served
    challenger = tmp_path / "challenger.bin"
    replace_model(other_model, challenger)
    app = create_app(load_served_model(path), Settings(model_file=path, challenger_model_file=challenger))
    replace_model(MODEL_FILE, challenger)
    assert reload_model(app)
    assert app.test_client().get("/model").get_json()["challenger"]["version"] == load_served_model(MODEL_FILE).version
