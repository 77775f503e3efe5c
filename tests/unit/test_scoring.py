"""Every row of the dataset, in both spellings, singly and in batches: the same probability as scikit-learn; and the
folded scorer's column path."""

import pickle

import numpy as np
import pytest

from churn.model.schema import FEATURES, FEATURES_BY_NAME
from churn.model.training import FEATURE_NAMES
from devtools import MODEL_FILE

TOLERANCE = 1e-12


@pytest.fixture(scope="module")
def reference(clean_df):
    with open(MODEL_FILE, "rb") as f:
        dv, model = pickle.load(f)
    expected = model.predict_proba(dv.transform(clean_df[FEATURE_NAMES].to_dict(orient="records")))[:, 1]
    return dv, model, expected


@pytest.fixture(scope="module")
def spellings(raw_df, clean_df):
    """The dataset's own rows (customerID and Churn included, blank TotalCharges as text), the same rows as
    Python's csv module reads them (every value text), upper-cased names and values, and the cleaned ones."""
    raw = raw_df.to_dict(orient="records")
    return {
        "raw": raw,
        "csv": [{k: str(v) for k, v in row.items()} for row in raw],
        "upper": [{k.upper(): v.upper() if isinstance(v, str) else v for k, v in row.items()} for row in raw],
        "clean": clean_df[FEATURE_NAMES].to_dict(orient="records"),
    }


@pytest.mark.slow  # 7,043 requests each: about 3 s
@pytest.mark.parametrize("spelling", ["raw", "csv", "upper", "clean"])
def test_single_requests(client, reference, spellings, spelling):
    *_, expected = reference
    got = np.array([client.post("/predict", json=row).get_json()["churn_probability"] for row in spellings[spelling]])
    assert len(got) == 7043
    assert np.abs(got - expected).max() <= TOLERANCE


@pytest.mark.slow  # every row; at a batch size of 1, 7,043 requests
@pytest.mark.parametrize("spelling", ["raw", "csv", "upper", "clean"])
@pytest.mark.parametrize("batch_size", [1, 1000, 7043])
def test_batches(client, reference, spellings, spelling, batch_size):
    *_, expected = reference
    rows = spellings[spelling]
    got = []
    for start in range(0, len(rows), batch_size):
        response = client.post("/predict", json=rows[start : start + batch_size])
        assert response.status_code == 200
        got += [answer["churn_probability"] for answer in response.get_json()]
    assert np.abs(np.array(got) - expected).max() <= TOLERANCE


@pytest.mark.slow  # every row in one request: with the tests above, the all-rows equivalence
def test_decisions_follow_the_threshold(client, reference, spellings):
    *_, expected = reference
    answers = client.post("/predict", json=spellings["clean"]).get_json()
    assert [a["churn"] for a in answers] == (expected >= 0.5).tolist()


def test_columns_score_as_dicts_do(served_model, clean_df):
    """LinearScorer.score_columns, dictionary-encoded, is score_many to the bit."""
    customers = clean_df[[f.name for f in FEATURES]].head(500).to_dict(orient="records")
    columns = {}
    for name, feature in FEATURES_BY_NAME.items():
        values = [c[name] for c in customers]
        if feature.categorical:
            spellings = sorted(set(values))
            columns[name] = (np.array([spellings.index(v) for v in values]), spellings)
        else:
            columns[name] = np.array(values, float)
    assert served_model.scorer.score_columns(columns).tolist() == served_model.scorer.score_many(customers)
