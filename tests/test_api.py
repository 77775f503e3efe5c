"""The /predict contract and every error class, through Flask's test client."""

import io
import json

import pytest

from churn.schema import FEATURES, FEATURES_BY_NAME, SAMPLE_CUSTOMER
from churn.service import Settings

RAW_SAMPLE = {
    "customerID": "7590-VHVEG",
    "gender": "Female",
    "SeniorCitizen": 0,
    "Partner": "Yes",
    "Dependents": "No",
    "tenure": 1,
    "PhoneService": "No",
    "MultipleLines": "No phone service",
    "InternetService": "DSL",
    "OnlineSecurity": "No",
    "OnlineBackup": "Yes",
    "DeviceProtection": "No",
    "TechSupport": "No",
    "StreamingTV": "No",
    "StreamingMovies": "No",
    "Contract": "Month-to-month",
    "PaperlessBilling": "Yes",
    "PaymentMethod": "Electronic check",
    "MonthlyCharges": 29.85,
    "TotalCharges": "29.85",
    "Churn": "No",
}


def post(client, body, content_type="application/json"):
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post("/predict", data=data, content_type=content_type)


def test_one_customer(client):
    response = post(client, SAMPLE_CUSTOMER)
    assert response.status_code == 200
    answer = response.get_json()
    assert set(answer) == {"churn_probability", "churn"}
    assert 0 < answer["churn_probability"] < 1
    assert answer["churn"] is (answer["churn_probability"] >= 0.5)


def test_both_spellings_give_the_same_probability(client):
    clean = post(client, SAMPLE_CUSTOMER).get_json()
    raw = post(client, RAW_SAMPLE).get_json()
    assert raw == clean


def test_a_batch_answers_in_order(client):
    other = dict(SAMPLE_CUSTOMER, contract="two_year", tenure=60)
    singles = [post(client, c).get_json() for c in (SAMPLE_CUSTOMER, other, RAW_SAMPLE)]
    assert post(client, [SAMPLE_CUSTOMER, other, RAW_SAMPLE]).get_json() == singles
    assert singles[0] != singles[1]


@pytest.mark.parametrize("settings", [Settings(threshold=0.99)])
def test_threshold_is_configurable(client):
    answer = post(client, SAMPLE_CUSTOMER).get_json()
    assert 0.5 < answer["churn_probability"] < 0.99 and answer["churn"] is False


def test_settings_from_environment():
    assert Settings.from_env({"CHURN_THRESHOLD": "0.3", "CHURN_MAX_CUSTOMERS": "7"}) == Settings(0.3, 7)
    with pytest.raises(ValueError, match="CHURN_THRESHOLD"):
        Settings.from_env({"CHURN_THRESHOLD": "50"})


def assert_error(response, status, fields=()):
    assert response.status_code == status
    assert response.content_type == "application/json"
    body = response.get_json()
    assert isinstance(body["error"], str) and body["error"]
    assert [d["field"] for d in body["detail"]] == list(fields)
    return body


@pytest.mark.parametrize(
    "field, value",
    [
        ("internetservice", "fiber"),
        ("internetservice", None),
        ("contract", "month_to_month"),
        ("gender", 1),
        ("seniorcitizen", 2),
        ("seniorcitizen", "yes"),
        ("tenure", 1.5),
        ("tenure", -1),
        ("tenure", "12 months"),
        ("monthlycharges", -0.01),
        ("monthlycharges", None),
        ("totalcharges", "abc"),
        ("totalcharges", [1]),
    ],
)
def test_invalid_values_name_the_field_and_what_is_allowed(client, field, value):
    body = assert_error(post(client, dict(SAMPLE_CUSTOMER, **{field: value})), 422, [field])
    assert field in body["error"]
    assert body["detail"][0]["type"] == FEATURES_BY_NAME[field].constraints()["type"]
    if FEATURES_BY_NAME[field].values:
        assert body["detail"][0]["allowed"] == list(FEATURES_BY_NAME[field].accepted_values)
    else:
        assert body["detail"][0]["minimum"] == 0


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_refused(client, token):
    body = json.dumps(SAMPLE_CUSTOMER).replace('"monthlycharges": 29.85', f'"monthlycharges": {token}')
    assert_error(post(client, body), 422, ["monthlycharges"])


def test_every_feature_is_required(client):
    body = assert_error(post(client, {}), 422, [f.name for f in FEATURES])
    assert {d["message"] for d in body["detail"]} == {"Field required"}
    missing_one = {k: v for k, v in SAMPLE_CUSTOMER.items() if k != "tenure"}
    assert_error(post(client, missing_one), 422, ["tenure"])


def test_the_raw_spelling_is_named_as_sent(client):
    assert_error(post(client, dict(RAW_SAMPLE, InternetService="Fibre")), 422, ["InternetService"])


def test_a_bad_row_in_a_batch_is_named_by_index(client):
    body = assert_error(post(client, [SAMPLE_CUSTOMER, dict(SAMPLE_CUSTOMER, tenure=-3), 5]), 422, ["tenure", None])
    assert [d["index"] for d in body["detail"]] == [1, 2]


@pytest.mark.parametrize("body", [b"null", b"5", b'"customer"', b"[]", b"true"])
def test_json_that_is_not_customers(client, body):
    assert_error(post(client, body), 422)


@pytest.mark.parametrize("body", [b"", b"{", b"{'gender': 'male'}", b"\xff\xfe", b"[" * 10000 + b"]" * 10000])
def test_unparseable_json_is_400(client, body):
    assert_error(post(client, body), 400)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_not_json_is_415(client, content_type):
    assert_error(post(client, SAMPLE_CUSTOMER, content_type=content_type), 415)


@pytest.mark.parametrize("settings", [Settings(max_customers=3)])
def test_too_many_customers_is_413(client):
    assert post(client, [SAMPLE_CUSTOMER] * 3).status_code == 200
    body = assert_error(post(client, [SAMPLE_CUSTOMER] * 4), 413)
    assert "3" in body["error"]


@pytest.mark.parametrize("settings", [Settings(max_body_bytes=2000)])
def test_too_large_body_is_413(client):
    assert post(client, [SAMPLE_CUSTOMER]).status_code == 200
    assert_error(post(client, [SAMPLE_CUSTOMER] * 10), 413)


def test_unknown_paths_and_methods_answer_json(client):
    assert_error(client.get("/nowhere"), 404)
    response = client.get("/predict")
    assert_error(response, 405)
    assert "POST" in response.headers["Allow"]
    assert_error(client.put("/predict", json=SAMPLE_CUSTOMER), 405)


@pytest.mark.parametrize("body", [SAMPLE_CUSTOMER, [SAMPLE_CUSTOMER, RAW_SAMPLE]])
def test_flask_view_and_fast_path_answer_alike(client, body):
    """With a Content-Length the fast path answers; without (chunked), Flask's view does: the same bytes."""
    data = json.dumps(body).encode()
    fast = client.post("/predict", data=data, content_type="application/json")
    chunked = client.post(
        "/predict",
        input_stream=io.BytesIO(data),
        content_type="application/json",
        environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""},
    )
    assert fast.status_code == chunked.status_code == 200
    assert fast.data == chunked.data
