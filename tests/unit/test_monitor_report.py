"""churn.monitor.report in process, on SQLite: a shadow challenger's AUC beside the served model's, from the same
outcomes, equal to scikit-learn's on the probabilities each model gave."""

import pytest
from sklearn.metrics import roc_auc_score
from werkzeug.test import EnvironBuilder

from churn.monitor.predictionlog import flush_all
from churn.monitor.report import build_report
from churn.monitor.store import Store
from churn.serve.app import create_app
from churn.serve.routes import PREDICTOR
from churn.settings import Settings
from tests.helpers import customers


def test_the_report_gives_the_challengers_auc_on_the_same_outcomes(served_model, other_model, tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    app = create_app(served_model, Settings(prediction_log=url, challenger_model_file=other_model))
    batch = [dict(c, customerID=f"c{i}") for i, c in enumerate(customers(200))]
    answer = app.extensions[PREDICTOR].endpoints["predict"](EnvironBuilder(method="POST", json=batch).get_environ())
    flush_all()
    churned = [i % 3 == 0 for i in range(len(batch))]
    outcomes = [{"prediction_id": i, "churned": c} for i, c in zip(answer.prediction_ids, churned, strict=True)]
    assert app.test_client().post("/outcomes", json=outcomes).get_json()["matched"] == len(batch)
    store = Store(url)
    try:
        (group,) = build_report(store)["groups"]
    finally:
        store.close()
    assert group["auc"] == pytest.approx(roc_auc_score(churned, answer.probabilities), abs=1e-12)
    assert group["challenger_auc"] == pytest.approx(roc_auc_score(churned, answer.challenger_probabilities), abs=1e-12)
    assert group["challenger_auc"] != group["auc"]
