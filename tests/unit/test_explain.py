"""Explanations: exact against scikit-learn's log-odds and shap's LinearExplainer, on every row in both spellings."""

import json
import shutil
import warnings

import numpy as np
import pytest

from churn.model.explain import Explainer, ExplanationUnavailable, global_explanation, make_explainer
from churn.model.schema import FEATURES, SAMPLE_CUSTOMER
from churn.model.scoring import load_served_model, sigmoid
from churn.model.training import FEATURE_NAMES
from churn.serve.app import create_app
from churn.serve.predictor import Predictor
from churn.settings import Settings
from devtools import MODEL_FILE
from tests.helpers import without_ids

LOG_ODDS_TOLERANCE = 1e-12
SHAP_TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def shap():
    with warnings.catch_warnings():
        # shap's colour maps, made at import, call matplotlib methods it plans to deprecate: not this project's
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        import shap
    return shap


@pytest.fixture(scope="module")
def explainer(served_model):
    return make_explainer(served_model)


@pytest.fixture(scope="module")
def spellings(raw_df, clean_df):
    """Every row keyed by the model's names, categories as the model spells them and as the dataset does."""
    clean = clean_df[FEATURE_NAMES].to_dict(orient="records")
    dataset = [
        {f.name: raw[f.column] if f.categorical else row[f.name] for f in FEATURES}
        for raw, row in zip(raw_df.to_dict(orient="records"), clean, strict=True)
    ]
    assert dataset[0]["contract"] == "Month-to-month" and clean[0]["contract"] == "month-to-month"
    return {"model": clean, "dataset": dataset}


def log_odds(answers) -> np.ndarray:
    return np.array([a["base_log_odds"] + sum(a["contributions"].values()) for a in answers])


@pytest.mark.slow  # every row, one at a time too
@pytest.mark.parametrize("spelling", ["model", "dataset"])
def test_contributions_add_up_to_scikit_learns_log_odds(
    explainer, served_model, explain_reference, spellings, spelling
):
    *_, decision = explain_reference
    customers = spellings[spelling]
    batch = explainer.explain(customers)
    assert len(batch) == 7043
    assert np.abs(log_odds(batch) - decision).max() <= LOG_ODDS_TOLERANCE
    # One customer at a time takes another code path (plain Python): the same answers to the bit.
    assert [explainer.explain_one(customer) for customer in customers] == batch
    # And the probability the explanation implies is the one /predict serves.
    served = np.array(served_model.scorer.score_many(customers))
    assert np.abs(np.array([sigmoid(z) for z in log_odds(batch)]) - served).max() <= LOG_ODDS_TOLERANCE
    assert all(set(a["contributions"]) == set(FEATURE_NAMES) for a in batch)


@pytest.mark.slow  # imports shap, and compares every row
@pytest.mark.parametrize("spelling", ["model", "dataset"])
def test_contributions_are_shaps_interventional_values(shap, explainer, explain_reference, spellings, spelling):
    dv, model, X_train, X_all, _ = explain_reference
    # The masker's own default would summarise the background with 100 sampled rows; the definition uses all of it.
    shap_explainer = shap.LinearExplainer(model, shap.maskers.Independent(X_train, max_samples=len(X_train)))
    assert shap_explainer.feature_perturbation == "interventional"
    columns = np.asarray(shap_explainer.shap_values(X_all))
    assert columns.shape == (7043, len(dv.feature_names_))
    # A categorical feature's value is the sum over its one-hot columns.
    feature_of_column = [name.split(dv.separator)[0] for name in dv.feature_names_]
    expected = np.stack([columns[:, [c == name for c in feature_of_column]].sum(axis=1) for name in FEATURE_NAMES], 1)
    answers = explainer.explain(spellings[spelling])
    got = np.array([[a["contributions"][name] for name in FEATURE_NAMES] for a in answers])
    assert np.abs(got - expected).max() <= SHAP_TOLERANCE
    assert abs(explainer.base_log_odds - float(np.squeeze(shap_explainer.expected_value))) <= SHAP_TOLERANCE


@pytest.mark.slow  # every row, and 500 one at a time
@pytest.mark.parametrize("spelling", ["model", "dataset"])
def test_the_json_answer_is_the_explanation_to_the_bit(served_model, explainer, spellings, spelling):
    customers = spellings[spelling]
    predictor = Predictor(served_model, Settings())
    body, _, ids, *_ = predictor.explanations(customers, True)
    scored, _, _ = predictor.scored(customers)
    expected = [
        {**predictor.prediction(c, p, i), **e}
        for c, p, i, e in zip(customers, scored, ids, explainer.explain(customers), strict=True)
    ]
    assert json.loads(body) == expected
    for customer in customers[:500]:  # one customer's probability is summed in plain Python, not numpy
        [probability], _, _ = predictor.scored([customer])
        body, _, [prediction_id], *_ = predictor.explanations([customer], False)
        alone = {**predictor.prediction(customer, probability, prediction_id), **explainer.explain([customer])[0]}
        assert json.loads(body) == alone


def test_every_feature_has_its_sentences():
    """A new feature is one Feature in the schema, with its phrases: the explainer needs one per value."""
    for feature in FEATURES:
        if feature.categorical:
            assert set(feature.phrases) == set(feature.values), feature.name
        else:
            above, below = feature.phrases
            assert above(feature.maximum) != below(feature.maximum), feature.name


def test_reasons_are_the_largest_pushes_toward_churn(explainer, spellings):
    counts = {0: 0, 1: 0, 2: 0, 3: 0}
    for customer, answer in zip(spellings["dataset"], explainer.explain(spellings["dataset"]), strict=True):
        contributions = answer["contributions"]
        toward_churn = sorted((c, name) for name, c in contributions.items() if c > 0)[::-1][:3]
        reasons = answer["reasons"]
        assert [(r["contribution"], r["feature"]) for r in reasons] == toward_churn
        for reason in reasons:
            feature = next(f for f in FEATURES if f.name == reason["feature"])
            value = customer[feature.name]
            # The value as the model spells it, whatever spelling came in.
            model_value = feature.clean_values[feature.values.index(value)] if feature.categorical else value
            assert reason["value"] == model_value
            assert reason["text"].endswith("the churn risk")
        counts[len(reasons)] += 1
    assert counts[3] > 6000 and counts[0] == 0


def test_the_course_customer_is_explained_as_a_marketer_reads_it(explainer):
    answer = explainer.explain_one(SAMPLE_CUSTOMER)
    assert [(r["feature"], r["value"], r["text"]) for r in answer["reasons"]] == [
        ("tenure", 1, "A short tenure (1 month) raises the churn risk"),
        ("contract", "month-to-month", "A month-to-month contract raises the churn risk"),
        ("monthlycharges", 29.85, "Low monthly charges ($29.85) raise the churn risk"),
    ]
    # Negative contributions lower the risk: a DSL line against the average customer's fiber optic odds.
    assert answer["contributions"]["internetservice"] < 0


def test_every_category_and_integer_reads_as_a_sentence(explainer):
    for j, feature in enumerate(FEATURES):
        if feature.categorical:
            sentences = {explainer.reason(j, value, 1.0)["text"] for value in feature.accepted_values}
            assert len(sentences) == len(feature.values), feature.name  # one per category, either spelling
        elif feature.integer:
            low, high = (explainer.reason(j, x, 1.0)["text"] for x in (int(feature.minimum), int(feature.maximum)))
            assert low != high


def test_global_explanation_is_the_models_weights(served_model, explain_reference):
    dv, model, *_ = explain_reference
    card = global_explanation(served_model.scorer)
    assert card["intercept"] == model.intercept_[0]
    coef = dict(zip(dv.feature_names_, model.coef_[0], strict=True))
    flat = {}
    for name, weight in card["weights"].items():
        if isinstance(weight, dict):
            flat |= {f"{name}{dv.separator}{value}": w for value, w in weight.items()}
        else:
            flat[name] = weight
    assert flat == coef
    json.dumps(card)  # it goes into /model's JSON as it is


def copy_model(tmp_path, sidecar: str | None):
    path = tmp_path / "model.bin"
    shutil.copy(MODEL_FILE, path)
    if sidecar is not None:
        path.with_name("model.bin.json").write_text(sidecar)
    return path


def damaged_sidecar(case: str) -> str | None:
    """The committed model's sidecar, damaged as case says."""
    text = MODEL_FILE.with_name(MODEL_FILE.name + ".json").read_text()
    texts = {
        "no metrics file": None,
        "an empty file": "",
        "not JSON": "{model: 1",
        "a JSON array": "[1, 2]",
        "a NaN": text.replace('"rows": 5634', '"rows": NaN'),
    }
    if case in texts:
        return texts[case]
    metrics = json.loads(text)
    means = metrics["explanation"]["means"]
    {
        "metrics from before explanations": lambda: metrics.pop("explanation"),
        "statistics of other features": lambda: means["contract"].pop("two_year"),
        "statistics that are not numbers": lambda: means.update(tenure="32"),
        "an impossible tenure mean": lambda: means.update(tenure=5000),
        "shares below 0": lambda: means.update(gender={"female": -3, "male": 4}),
        "shares of 2": lambda: means.update(contract={"month-to-month": -3, "one_year": 2, "two_year": 2}),
        "shares all 0": lambda: means.update(partner={"yes": 0, "no": 0}),
    }[case]()
    return json.dumps(metrics)


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("no metrics file", "is missing"),
        ("an empty file", "is not JSON"),
        ("not JSON", "is not JSON"),
        ("a JSON array", "is not a JSON object but a list"),
        ("a NaN", "holds NaN, which is not a number JSON allows"),
        ("metrics from before explanations", "has no explanation statistics"),
        ("statistics of other features", "do not match the model's features"),
        ("statistics that are not numbers", "has a tenure statistic that is not a finite number"),
        ("an impossible tenure mean", "has a tenure mean of 5000, outside the schema's range (from 0 to 1200)"),
        ("shares below 0", "has gender shares [-3, 4], not shares in [0, 1] adding up to 1"),
        ("shares of 2", "has contract shares [-3, 2, 2]"),
        ("shares all 0", "has partner shares [0, 0]"),
    ],
)
def test_a_model_without_usable_statistics_still_predicts_and_says_how_to_explain(tmp_path, case, problem):
    model = load_served_model(copy_model(tmp_path, damaged_sidecar(case)))
    with pytest.raises(ExplanationUnavailable) as caught:
        make_explainer(model)
    message = str(caught.value)
    assert "model.bin.json" in message and problem in message and "python train.py" in message
    client = create_app(model).test_client()
    response = client.post("/predict", json=SAMPLE_CUSTOMER)
    assert response.status_code == 200 and 0 < response.get_json()["churn_probability"] < 1
    refusal = client.post("/explain", json=SAMPLE_CUSTOMER)
    assert 400 <= refusal.status_code < 500 and refusal.get_json()["error"] == message
    card = client.get("/model")
    assert card.status_code == 200
    json.loads(card.data, parse_constant=lambda name: pytest.fail(f"/model holds {name}"))


@pytest.mark.slow  # every row through /explain and /predict
@pytest.mark.parametrize("spelling", ["model", "dataset"])
def test_the_service_answers_the_explanation_with_predicts_probability(client, explainer, spellings, spelling):
    customers = spellings[spelling]
    explained = client.post("/explain", json=customers).get_json()
    predicted = client.post("/predict", json=customers).get_json()
    assert len(explained) == len(predicted) == 7043
    assert [{k: a[k] for k in ("churn_probability", "churn")} for a in explained] == without_ids(predicted)
    expected = explainer.explain(customers)
    assert [{k: a[k] for k in ("base_log_odds", "contributions", "reasons")} for a in explained] == expected
    single = client.post("/explain", json=customers[0]).get_json()
    assert without_ids(single) == without_ids(explained[0])


def test_the_statistics_stay_out_of_the_training_metrics(served_model):
    assert "explanation" not in served_model.training
    assert Explainer(served_model.scorer, served_model.explanation).base_log_odds < 0  # most customers stay
