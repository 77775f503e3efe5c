"""The prediction log on SQLite, in process: what each answer writes, the schema's version, and a store that is
down (a folder that does not exist yet) filling the bounded queue, then coming back."""

import sqlite3

import pytest
from werkzeug.test import EnvironBuilder

from churn.model.schema import FEATURES, SAMPLE_CUSTOMER
from churn.monitor.predictionlog import flush_all
from churn.monitor.store import SCHEMA_VERSION, Store
from churn.serve.app import create_app
from churn.serve.routes import PREDICTOR
from churn.settings import Settings
from tests.helpers import customers, samples


def app_logging_to(served_model, url: str, queue: int = 10_000):
    app = create_app(served_model, Settings(prediction_log=url, prediction_log_queue=queue))
    return app.test_client()


def rows(path) -> list[dict]:
    """The log's rows, a row per customer: its packs unpacked first, as its readers do."""
    Store(f"sqlite:///{path}").unpack()
    with sqlite3.connect(path) as connection:
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute("SELECT * FROM predictions ORDER BY prediction_id")]


def dropped(client) -> float:
    return samples(client.get("/metrics").text).get(("churn_prediction_log_dropped_total", ()), 0.0)


def test_each_answered_customer_is_logged_with_its_id_features_and_answer(served_model, tmp_path):
    client = app_logging_to(served_model, f"sqlite:///{tmp_path / 'log.db'}")
    one = client.post("/predict", json={**SAMPLE_CUSTOMER, "customerID": "A-1"})
    # The dataset's spelling, which reaches the log in the model's.
    dataset_spelled = [
        {f.column: c[f.name] for f in FEATURES} | {"customerID": f"B-{i}"} for i, c in enumerate(customers(3))
    ]
    dataset_spelled[0]["Contract"] = "Month-to-month"
    batch = client.post("/predict", json=dataset_spelled)
    explained = client.post("/explain", json=customers(2))
    flush_all()
    answers = [one.get_json(), *batch.get_json(), *explained.get_json()]
    assert one.headers["X-Prediction-ID"] == one.get_json()["prediction_id"]
    assert "X-Prediction-ID" not in batch.headers
    logged = {row["prediction_id"]: row for row in rows(tmp_path / "log.db")}
    assert set(logged) == {a["prediction_id"] for a in answers}
    sent = [{**SAMPLE_CUSTOMER}, *customers(3), *customers(2)]
    endpoints = ["predict"] * 4 + ["explain"] * 2
    for answer, customer, endpoint in zip(answers, sent, endpoints, strict=True):
        row = logged[answer["prediction_id"]]
        assert row["probability"] == answer["churn_probability"] and row["decision"] == answer["churn"]
        assert row["customer_id"] == answer.get("customerID") and row["endpoint"] == endpoint
        assert {f.name: row[f.name] for f in FEATURES} == {f.name: customer[f.name] for f in FEATURES}
        assert row["model_version"] == served_model.version
        assert row["challenger_probability"] is None


def test_the_schema_is_made_once_and_recorded(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    for _ in range(3):
        Store(url).close()
    with sqlite3.connect(tmp_path / "log.db") as connection:
        versions = connection.execute("SELECT version FROM schema_version").fetchall()
    assert versions == [(version,) for version in range(1, SCHEMA_VERSION + 1)]


def test_a_store_that_is_down_costs_the_overflow_not_the_answers(served_model, tmp_path):
    folder = tmp_path / "not-yet"
    client = app_logging_to(served_model, f"sqlite:///{folder / 'log.db'}", queue=5)
    before = dropped(client)
    answers = [client.post("/predict", json=c) for c in customers(8)]
    assert [a.status_code for a in answers] == [200] * 8
    assert dropped(client) - before == 3  # 5 held, 3 over the bound
    folder.mkdir()
    flush_all()  # the writer retries each second; the flush waits for it
    logged = {row["prediction_id"] for row in rows(folder / "log.db")}
    assert logged == {a.get_json()["prediction_id"] for a in answers[:5]}


@pytest.mark.parametrize("url", ["mysql://x/y", "sqlite://relative.db", "postgres://x/y"])
def test_a_log_url_of_another_kind_stops_the_start(url):
    from churn.settings import SettingError

    with pytest.raises(SettingError, match="CHURN_PREDICTION_LOG must start with"):
        Settings(prediction_log=url)


def test_a_challengers_probabilities_are_logged_beside_the_answers(served_model, other_model, tmp_path):
    settings = Settings(prediction_log=f"sqlite:///{tmp_path / 'log.db'}", challenger_model_file=other_model)
    app = create_app(served_model, settings)
    endpoint = app.extensions[PREDICTOR].endpoints["predict"]
    answer = endpoint(EnvironBuilder(method="POST", json=customers(5)).get_environ())
    flush_all()
    logged = {row["prediction_id"]: row for row in rows(tmp_path / "log.db")}
    assert [logged[i]["challenger_probability"] for i in answer.prediction_ids] == answer.challenger_probabilities
    assert [logged[i]["probability"] for i in answer.prediction_ids] == answer.probabilities
    assert answer.challenger_probabilities != answer.probabilities  # C=0.1 is another model
