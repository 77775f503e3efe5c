"""Drift: the reference profile train.py writes, the bins, PSI against evidently's, and the counts the service keeps
(bounded whatever a client sends; a batch counts what one customer at a time counts)."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import entropy

import tests.references  # noqa: F401 (evidently importable under pandas 3)
from churn.model.explain import make_explainer
from churn.model.schema import FEATURES, SAMPLE_CUSTOMER
from churn.model.scoring import columns_of
from churn.model.training import split
from churn.monitor import drift, live
from churn.monitor.drift import EMPTY_SHARE, SCORE, Reference, ReferenceUnavailable, counts_of, psi
from tests.helpers import customers, samples


def evidently_psi():
    """evidently's own PSI (legacy stattests), on two series of bin labels."""
    from evidently.legacy.calculations.stattests.psi import _psi
    from evidently.legacy.core import ColumnType

    return lambda reference, current: _psi(reference, current, ColumnType.Categorical, 0.1)[0]


@pytest.fixture(scope="module")
def reference(served_model) -> Reference:
    return Reference.from_json(served_model.reference)


@pytest.fixture(scope="module")
def training_split(clean_df):
    return split(clean_df)[0]


def binned(values, edges) -> pd.Series:
    """Each value's bin, [edge i, edge i+1) with open ends, as the number of edges at or below it: the definition,
    not the service's code (edges may repeat, where pandas.cut refuses them)."""
    values = np.asarray(values, float)
    return pd.Series((values[:, None] >= np.asarray(edges)[None, :]).sum(axis=1))


def test_the_profile_is_the_training_splits(reference, training_split, explain_reference):
    dv, model, X_train, _, _ = explain_reference
    assert reference.rows == len(training_split) == len(X_train)
    for feature in FEATURES:
        column = training_split[feature.name]
        if feature.categorical:
            expected = column.value_counts(normalize=True).reindex(feature.clean_values, fill_value=0)
        else:
            edges = reference.edges[feature.name]
            assert edges == np.quantile(column, np.arange(1, 10) / 10).tolist()
            expected = binned(column, edges).value_counts(normalize=True).reindex(range(10), fill_value=0)
        assert reference.shares[feature.name] == pytest.approx(expected.tolist(), abs=1e-12), feature.name
    probabilities = model.predict_proba(X_train)[:, 1]
    assert reference.edges[SCORE] == np.quantile(probabilities, np.arange(1, 10) / 10).tolist()
    expected = binned(probabilities, reference.edges[SCORE]).value_counts(normalize=True).sort_index()
    assert reference.shares[SCORE] == pytest.approx(expected.tolist(), abs=1e-12)


def test_mean_abs_contribution_is_the_explainers(reference, served_model, training_split):
    explainer = make_explainer(served_model)
    rows = training_split[[f.name for f in FEATURES]].to_dict(orient="records")
    contributions = pd.DataFrame([e["contributions"] for e in explainer.explain(rows)])
    expected = contributions.abs().mean()
    for feature in FEATURES:
        assert reference.mean_abs_contribution[feature.name] == pytest.approx(expected[feature.name], rel=1e-9)


def test_psi_is_evidentlys_on_the_same_bins(clean_df, training_split):
    """Bins as categories to evidently: its PSI of the same bins, the zero replacement included, to 1e-6."""
    evidently = evidently_psi()
    rng = np.random.default_rng(20)
    drifted = clean_df[(clean_df.contract == "month-to-month") & (clean_df.internetservice == "fiber_optic")]
    cases = [(training_split, clean_df.sample(500, random_state=1)), (training_split, drifted)]
    checked = 0
    for reference_rows, live_rows in cases:
        for feature in FEATURES:
            if feature.categorical:
                ref, cur = reference_rows[feature.name], live_rows[feature.name]
            else:
                edges = np.quantile(reference_rows[feature.name], np.arange(1, 10) / 10)
                ref, cur = binned(reference_rows[feature.name], edges), binned(live_rows[feature.name], edges)
            bins = sorted(set(ref) | set(cur), key=str)
            ours = psi(ref.value_counts().reindex(bins, fill_value=0), cur.value_counts().reindex(bins, fill_value=0))
            assert ours == pytest.approx(evidently(ref, cur), abs=1e-6), feature.name
            checked += 1
    # Shares with empty bins on either side, and below 0.0001 (evidently's other replacement).
    for _ in range(20):
        reference_counts, live_counts = rng.integers(0, 3, 10) * rng.integers(1, 100000, 10), rng.integers(0, 50, 10)
        reference_counts[0], live_counts[1] = 1, 0
        ref = pd.Series(np.repeat(np.arange(10), reference_counts))
        cur = pd.Series(np.repeat(np.arange(10), live_counts))
        assert psi(reference_counts, live_counts) == pytest.approx(evidently(ref, cur), abs=1e-6)
        checked += 1
    assert checked == 2 * len(FEATURES) + 20


def test_psi_reads_as_documented():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0
    assert math.isnan(psi([0.5, 0.5], [0, 0]))
    assert [drift.level(x) for x in (0.05, 0.1, 0.2, 0.25, 3)] == [
        "stable",
        "moderate",
        "moderate",
        "significant",
        "significant",
    ]


def test_a_damaged_profile_is_refused_with_its_reason(served_model):
    profile = json.loads(json.dumps(served_model.reference))
    profile["bins"]["tenure"]["edges"] = profile["bins"]["tenure"]["edges"][::-1]
    with pytest.raises(ReferenceUnavailable, match="out of order"):
        Reference.from_json(profile)
    profile = json.loads(json.dumps(served_model.reference))
    del profile["bins"]["contract"]
    with pytest.raises(ReferenceUnavailable, match="cannot be read"):
        Reference.from_json(profile)
    counts, problem = live.DriftCounts.of(None)
    assert counts is None and "no reference profile" in problem


def test_a_batch_counts_what_one_customer_at_a_time_counts(served_model, reference, clean_df):
    rows = clean_df.head(300)[[f.name for f in FEATURES]].to_dict(orient="records")
    rows += customers(50) + [dict(SAMPLE_CUSTOMER, contract="Two year", internetservice="Fiber optic")]  # dataset's
    scorer = served_model.scorer
    columns = columns_of(rows)
    probabilities = scorer.score_columns(columns)
    batch = counts_of(reference, columns, probabilities)
    position = {key: i for i, key in enumerate(live.SERIES)}
    counter = live.DriftCounts(reference)
    one_by_one = [0] * len(live.SERIES)

    def record(counts):  # what the flushing thread or flush() hands over, in place of the metrics
        for i, n in enumerate(counts):
            one_by_one[i] += n

    live.flush()
    publish, live._pending.publish = live._pending.publish, record
    try:
        for row, probability in zip(rows, probabilities.tolist(), strict=True):
            counter.observe([row], [probability], None)
        live.flush()
    finally:
        live._pending.publish = publish
    for name, counts in batch.items():
        assert sum(counts) == len(rows)
        for bin_, n in zip(reference.bins(name), counts.tolist(), strict=True):
            assert one_by_one[position[name, bin_]] == n, (name, bin_)


DRIFT_NAMES = ("churn_feature_", "churn_score_", "churn_refused_values")


def drift_series(text: str) -> dict:
    """The samples of the drift metrics and the refused values (the HTTP series have a label per status seen)."""
    return {key: value for key, value in samples(text).items() if key[0].startswith(DRIFT_NAMES)}


def test_random_values_leave_the_series_unchanged(client, reference):
    """10,000 random values, keys and categories: counted, in the series there were before (none named by a client)."""
    before = drift_series(client.get("/metrics").text)
    assert {key for key in before if key[0] == "churn_feature_customers_total"} == {
        ("churn_feature_customers_total", (("bin", b), ("feature", f))) for f, b in live.SERIES if f != SCORE
    }
    rng = np.random.default_rng(7)
    words = ["".join(rng.choice(list("abcxyz_- é"), rng.integers(1, 12))) for _ in range(2000)]
    sent = 0
    for i in range(100):
        batch = []
        for j in range(25):
            customer = dict(SAMPLE_CUSTOMER, tenure=int(rng.integers(0, 80)), monthlycharges=float(rng.random() * 130))
            customer[words[(i * 25 + j) % len(words)]] = words[(i * 7 + j) % len(words)]  # an unknown key
            if j % 2:
                customer["contract"] = words[(i * 3 + j) % len(words)]  # refused
            batch.append(customer)
            sent += 4
        client.post("/predict", json=batch)
        client.post("/predict", json=batch[0])
        client.post("/predict", json=[c for c in batch if c["contract"] == "month-to-month"])
    assert sent == 10_000
    after = drift_series(client.get("/metrics").text)
    assert set(after) == set(before)
    refused = ("churn_refused_values_total", (("field", "contract"),))
    assert after[refused] > before[refused]
    moved = ("churn_feature_customers_total", (("bin", "month-to-month"), ("feature", "contract")))
    assert after[moved] > before[moved]
    shares = {k: v for k, v in after.items() if k[0] == "churn_feature_reference_share"}
    assert (
        shares[("churn_feature_reference_share", (("bin", "2"), ("feature", "tenure")))]
        == reference.shares["tenure"][2]
    )
    assert len(shares) == len(live.SERIES) - 10


@pytest.mark.parametrize("seed", range(5))
def test_psi_is_the_symmetric_kl_divergence_of_the_shares(seed):
    rng = np.random.default_rng(seed)
    expected, actual = rng.integers(1, 1000, 10), rng.integers(1, 1000, 10)
    e, a = expected / expected.sum(), actual / actual.sum()
    assert psi(expected, actual) == pytest.approx(entropy(e, a) + entropy(a, e), rel=1e-12)


def test_the_same_distribution_has_no_shift_and_scale_does_not_matter():
    counts = np.array([5, 10, 20, 40, 25])
    assert psi(counts, counts * 7) == pytest.approx(0, abs=1e-15)


def test_a_bin_empty_in_one_distribution_counts_as_a_tiny_share_and_one_empty_in_both_is_no_bin():
    expected, actual = [50, 50, 0, 0], [50, 0, 50, 0]
    shares_e, shares_a = np.array([0.5, 0.5, EMPTY_SHARE]), np.array([0.5, EMPTY_SHARE, 0.5])
    assert psi(expected, actual) == pytest.approx(np.sum((shares_e - shares_a) * np.log(shares_e / shares_a)))
    # Where the smallest share is already below EMPTY_SHARE, an empty bin is a millionth of it.
    expected, actual = [1, 99_999, 0], [1, 99_998, 1]
    e = np.array([1e-5, 0.99999, 1e-11])
    a = np.array([1, 99_998, 1]) / 100_000
    assert psi(expected, actual) == pytest.approx(np.sum((e - a) * np.log(e / a)))
