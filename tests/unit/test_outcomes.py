"""POST /outcomes in process, on SQLite: the join, and every refusal in the service's JSON error shape."""

import pytest

from churn import errors
from churn.monitor.outcomes import csv_records, outcomes_adapter, read_outcomes
from churn.serve.app import create_app
from churn.settings import Settings
from tests.helpers import customers


@pytest.fixture
def logged(served_model, tmp_path):
    app = create_app(served_model, Settings(prediction_log=f"sqlite:///{tmp_path / 'log.db'}", max_customers=5))
    return app.test_client()


def predicted(client, ids: list[str]) -> list[str]:
    from churn.monitor.predictionlog import flush_all

    answers = client.post(
        "/predict", json=[dict(c, customerID=i) for c, i in zip(customers(len(ids)), ids, strict=True)]
    )
    flush_all()
    return [a["prediction_id"] for a in answers.get_json()]


def test_outcomes_join_by_prediction_id_or_the_customers_latest_prediction_before_they_were_observed(logged):
    prediction_ids = predicted(logged, ["a", "b", "c"])
    answer = logged.post(
        "/outcomes",
        json=[
            {"customerID": "a", "churned": True},  # observed today: joins today's prediction
            {"prediction_id": prediction_ids[1], "churned": False, "observed_at": "2020-01-01"},
            {"customerID": "c", "churned": True, "observed_at": "2020-01-01"},  # before any prediction of c
            {"customerID": "unknown", "churned": False},
        ],
    )
    assert answer.status_code == 200
    assert answer.get_json() == {"received": 4, "matched": 2, "unmatched": 2}


@pytest.mark.parametrize(
    "body,status,error",
    [
        ([{"churned": True}], 422, "1 invalid outcome values, in the body"),
        ([{"customerID": "a", "churned": "maybe"}], 422, "in churned"),
        ([{"customerID": "a", "churned": True, "observed_at": "2026-13-01"}], 422, "in observed_at"),
        ([{"prediction_id": "not-a-uuid", "churned": True}], 422, "in prediction_id"),
        ([{"customerID": "a", "churned": True, "extra": 1}], 422, "in extra"),
        ([{"customerID": "a\x00b", "churned": True}], 422, "customerID holds no NUL character"),
        ([], 422, "in the body"),
        ([{"customerID": "a", "churned": True}] * 6, 413, "Too many outcomes in one request: at most 5"),
    ],
)
def test_invalid_outcomes_are_a_422_naming_each_field(logged, body, status, error):
    answer = logged.post("/outcomes", json=body)
    assert answer.status_code == status
    assert error in answer.get_json()["error"] + str(answer.get_json()["detail"])


def test_malformed_json_wrong_type_and_no_log_are_refused(logged, client):
    assert logged.post("/outcomes", data="[{", content_type="application/json").status_code == 400
    answer = logged.post("/outcomes", data="[]", content_type="text/csv")
    assert (answer.status_code, answer.get_json()["error"]) == (415, errors.OUTCOMES_NOT_JSON)
    answer = client.post("/outcomes", json=[{"customerID": "a", "churned": True}])  # the app without a log
    assert (answer.status_code, answer.get_json()["error"]) == (404, errors.NO_PREDICTION_LOG)


def test_a_csv_row_of_the_dataset_reads_its_churn_column():
    rows = [{"customerID": "7590-VHVEG", "gender": "Female", "Churn": "No"}, {"customerID": "x", "Churn": "Yes"}]
    outcomes = read_outcomes(outcomes_adapter(10), records=csv_records(rows))
    assert [(o.customerID, o.churned) for o in outcomes] == [("7590-VHVEG", False), ("x", True)]
