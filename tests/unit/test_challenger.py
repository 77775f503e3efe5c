"""The shadow challenger (CHURN_CHALLENGER_MODEL_FILE) through Flask's test client: the answers do not change, its
probabilities are the challenger's (scikit-learn's predict_proba as reference), and /metrics counts them."""

import logging

import numpy as np
import pytest
from werkzeug.test import EnvironBuilder

from churn import metrics
from churn.model.scoring import load_served_model
from churn.model.training import FEATURE_NAMES, load_model
from churn.monitor.drift import psi
from churn.serve.app import create_app
from churn.serve.routes import PREDICTOR
from churn.settings import Settings
from devtools import MODEL_FILE
from tests.helpers import customers, samples, without_ids

BATCH = customers(200)


@pytest.fixture(scope="module")
def shadowed(served_model, other_model):
    """The service with the C=0.1 model as challenger, and the same without."""
    with_challenger = create_app(served_model, Settings(challenger_model_file=other_model))
    return with_challenger, create_app(served_model, Settings())


def sklearn_probabilities(model_file, batch: list[dict]) -> np.ndarray:
    dv, model = load_model(model_file)
    return model.predict_proba(dv.transform([{name: c[name] for name in FEATURE_NAMES} for c in batch]))[:, 1]


@pytest.mark.parametrize("path", ["/predict", "/explain"])
@pytest.mark.parametrize("body", [BATCH[0], BATCH, [{"tenure": "x"}]], ids=["one", "batch", "invalid"])
def test_the_answers_are_byte_for_byte_those_without_the_challenger(shadowed, path, body):
    with_challenger, without = (app.test_client().post(path, json=body) for app in shadowed)
    assert with_challenger.status_code == without.status_code
    assert without_ids(with_challenger.data) == without_ids(without.data)  # each answer's id is its own


def test_the_answer_carries_the_challengers_probabilities_for_the_prediction_log(shadowed, other_model):
    app = shadowed[0]
    endpoint = app.extensions[PREDICTOR].endpoints["predict"]
    answer = endpoint(EnvironBuilder(method="POST", json=BATCH).get_environ())
    assert answer.challenger_probabilities == pytest.approx(sklearn_probabilities(other_model, BATCH), abs=1e-12)
    assert answer.probabilities == pytest.approx(sklearn_probabilities(MODEL_FILE, BATCH), abs=1e-12)
    assert answer.challenger_probabilities != answer.probabilities  # C=0.1 is another model


def challenger_counts(client) -> dict:
    exposed = samples(client.get("/metrics").text)
    by_bin = {
        model: np.array([exposed[("churn_challenger_customers_total", (("bin", b), ("model", model)))] for b in bins])
        for model in metrics.SHADOW_MODELS
        for bins in [metrics.PROBABILITY_BINS]
    }
    agreement = {
        agree: exposed[("churn_challenger_agreement_customers_total", (("agree", agree),))]
        for agree in ("true", "false")
    }
    return {**by_bin, **agreement, "psi": exposed.get(("churn_challenger_psi", ()))}


def test_metrics_count_both_models_tenths_their_agreement_and_psi(shadowed, other_model):
    client = shadowed[0].test_client()
    before = challenger_counts(client)
    assert client.post("/predict", json=BATCH).status_code == 200
    assert client.post("/predict", json=BATCH[0]).status_code == 200
    after = challenger_counts(client)
    sent = [*BATCH, BATCH[0]]
    champion, challenger = (sklearn_probabilities(path, sent) for path in (MODEL_FILE, other_model))
    for model, probabilities in (("champion", champion), ("challenger", challenger)):
        expected = np.histogram(probabilities, bins=metrics.PROBABILITY_EDGES)[0]
        assert (after[model] - before[model]).tolist() == expected.tolist()
    agreed = int(np.sum((champion >= 0.5) == (challenger >= 0.5)))
    assert (after["true"] - before["true"], after["false"] - before["false"]) == (agreed, len(sent) - agreed)
    assert after["psi"] == pytest.approx(psi(after["champion"], after["challenger"]), rel=1e-12)


def test_the_card_and_model_info_name_both_models(shadowed, served_model, other_model):
    client = shadowed[0].test_client()
    challenger = load_served_model(other_model)
    assert client.get("/model").get_json()["challenger"] == {
        "model_file": other_model.name,
        "version": challenger.version,
    }
    exposed = samples(client.get("/metrics").text)
    for role, model in (("champion", served_model), ("challenger", challenger)):
        labels = (("model_file", model.path.name), ("role", role), ("version", model.version))
        assert exposed[("churn_model_info", labels)] == 1


def test_a_challenger_that_cannot_load_is_left_out_and_the_champion_serves(tmp_path, served_model, caplog):
    broken = tmp_path / "challenger.bin"
    broken.write_bytes(MODEL_FILE.read_bytes()[:200])
    with caplog.at_level(logging.ERROR, logger="churn.monitor.challenger"):
        client = create_app(served_model, Settings(challenger_model_file=broken)).test_client()
    assert any(str(broken) in record.getMessage() for record in caplog.records)
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    (problem,) = ready.get_json()["detail"]
    assert "challenger is left out" in problem and str(broken) in problem and "truncated" in problem
    assert client.get("/model").get_json()["challenger"] is None
    answer = client.post("/predict", json=BATCH[0])
    assert answer.status_code == 200
    assert answer.get_json()["churn_probability"] == pytest.approx(sklearn_probabilities(MODEL_FILE, BATCH[:1])[0])
