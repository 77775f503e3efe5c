"""The readiness probe when the warm-up fails, and the model card (/model), through Flask's test client."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import sklearn

from churn.model.data import file_sha256
from churn.model.schema import FEATURES, SAMPLE_CUSTOMER
from churn.model.scoring import load_served_model
from churn.model.training import load_model, save_model
from churn.serve.app import create_app
from devtools import MODEL_FILE


def nan_model(tmp_path: Path) -> Path:
    """A real model file whose scorer answers NaN: the warm-up must fail."""
    dv, model = load_model(MODEL_FILE)
    model.intercept_ = np.array([np.nan])
    path = tmp_path / "model_nan.bin"
    save_model(path, dv, model)
    return path


def test_not_ready_when_the_warm_up_prediction_fails(tmp_path):
    client = create_app(load_served_model(nan_model(tmp_path))).test_client()
    assert client.get("/health/live").status_code == 200
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert "warm-up" in ready.get_json()["error"]
    # A model that cannot score must not answer predictions (it would send NaN, which is not JSON).
    for body in (SAMPLE_CUSTOMER, [SAMPLE_CUSTOMER]):
        response = client.post("/predict", json=body)
        assert response.status_code == 503
        assert "warm-up" in response.get_json()["error"]


def test_model_card(client, dataset_path, served_model):
    card = client.get("/model").get_json()
    assert card["model_file"] == MODEL_FILE.name
    assert card["sha256"] == hashlib.sha256(MODEL_FILE.read_bytes()).hexdigest()
    # The version: the C scikit-learn fitted with, and the start of the file's sha256.
    assert card["version"] == f"C={load_model(MODEL_FILE)[1].C!r}-{card['sha256'][:12]}" == served_model.version
    assert card["challenger"] is None
    assert card["threshold"] == 0.5
    training = json.loads(MODEL_FILE.with_name(MODEL_FILE.name + ".json").read_text())
    # The card reports the training metrics; the explanation statistics beside them serve /explain.
    assert card["training"] == {k: v for k, v in training.items() if k not in ("explanation", "reference")}
    assert card["drift"] == {"counted": True, "reference": training["reference"]}
    weights = card["explanation"]["weights"]
    assert card["explanation"]["intercept"] == served_model.scorer.intercept
    assert set(weights) == {f.name for f in FEATURES}
    for feature in FEATURES:
        if feature.values:
            assert set(weights[feature.name]) == set(feature.clean_values)
        else:
            assert isinstance(weights[feature.name], float)
    # load_model refuses a pickle of another scikit-learn, and train.py recorded the one it pickled with.
    assert card["sklearn_version"] == sklearn.__version__ == training["versions"]["scikit-learn"]
    assert training["data_sha256"] == file_sha256(dataset_path)
    assert len(training["cv_auc"]) == training["params"]["n_splits"]
    assert 0.8 < training["cv_auc_mean"] < 0.9 and 0.8 < training["test_auc"] < 0.9
    assert list(card["features"]) == [f.name for f in FEATURES]
    for feature in FEATURES:
        described = card["features"][feature.name]
        assert described["type"] == ("string" if feature.values else "integer" if feature.integer else "number")
        if feature.values:
            assert described["allowed"] == list(feature.clean_values)
        else:
            assert (described["minimum"], described["maximum"]) == (feature.minimum, feature.maximum)


def test_model_card_without_training_metrics(tmp_path):
    path = tmp_path / "model_C=1.0.bin"
    shutil.copy(MODEL_FILE, path)
    card = create_app(load_served_model(path)).test_client().get("/model").get_json()
    assert card["training"] is None
    assert card["drift"]["counted"] is False and "no reference profile" in card["drift"]["reason"]
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
