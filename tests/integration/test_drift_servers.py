"""Drift counts under real gunicorn: every series there from the first scrape, and the customers answered counted
exactly in their bins, summed across two workers that are recycled every ~50 requests, with the refused values."""

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests

from churn.model.schema import FEATURES, SAMPLE_CUSTOMER
from churn.model.scoring import load_served_model
from churn.monitor.drift import SCORE, Reference, series_keys
from devtools import MODEL_FILE, free_port, gunicorn_command, running_server
from tests.helpers import customers, samples
from tests.integration.test_metrics_servers import per_process

FEATURE_SERIES, SCORE_SERIES = "churn_feature_customers_total", "churn_score_customers_total"


def drift_counts(url: str) -> dict[tuple[str, str], float]:
    """(feature or SCORE, bin) -> customers counted, from /metrics."""
    counted = {}
    for (name, labels), value in samples(requests.get(f"{url}/metrics", timeout=10).text).items():
        labels = dict(labels)
        if name == FEATURE_SERIES:
            counted[labels["feature"], labels["bin"]] = value
        elif name == SCORE_SERIES:
            counted[SCORE, labels["bin"]] = value
    return counted


def expected_counts(reference: Reference, sent: list[dict], probabilities: list[float]) -> dict:
    """Each customer in its bins, by the definition: a number's bin is how many edges are at or below it."""
    expected = dict.fromkeys(series_keys(), 0)
    for customer, probability in zip(sent, probabilities, strict=True):
        for feature in FEATURES:
            value = customer[feature.name]
            bin_ = value if feature.categorical else str(int(np.sum(np.array(reference.edges[feature.name]) <= value)))
            expected[feature.name, bin_] += 1
        expected[SCORE, str(int(np.sum(np.array(reference.edges[SCORE]) <= probability)))] += 1
    return expected


def test_drift_counts_are_summed_across_recycled_workers(tmp_path):
    reference = Reference.from_json(load_served_model(MODEL_FILE).reference)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    port = free_port()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "GUNICORN_MAX_REQUESTS": "50"}
    env["GUNICORN_MAX_REQUESTS_JITTER"] = "10"
    with running_server(gunicorn_command(port, workers=2), port, env=env) as (url, _):
        first = drift_counts(url)
        assert first == dict.fromkeys(series_keys(), 0)  # every series from the start, at 0
        shares = samples(requests.get(f"{url}/metrics", timeout=10).text)
        assert shares[("churn_score_reference_share", (("bin", "9"),))] == reference.shares[SCORE][9]

        sent = customers(600)
        bodies = [*sent[:300], *[sent[i : i + 30] for i in range(300, 600, 30)]]
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda body: requests.post(f"{url}/predict", json=body, timeout=10), bodies))
        assert [a.status_code for a in answers] == [200] * len(bodies)
        probabilities = []
        for answer in answers:
            body = answer.json()
            probabilities += [a["churn_probability"] for a in (body if isinstance(body, list) else [body])]
        refused = [dict(SAMPLE_CUSTOMER, contract="weekly", tenure=-1), [SAMPLE_CUSTOMER, {"gender": "x"}]]
        assert [requests.post(f"{url}/predict", json=b, timeout=10).status_code for b in refused] == [422, 422]

        # A worker hands its counts over within a second (churn.monitor.live): wait for them, then compare exactly.
        expected = expected_counts(reference, sent, probabilities)
        deadline = time.monotonic() + 30
        while (counted := drift_counts(url)) != expected and time.monotonic() < deadline:
            time.sleep(0.2)
        assert counted == expected
        workers = per_process(metrics_dir, tmp_path / "workers")
        exposition = samples(requests.get(f"{url}/metrics", timeout=10).text)
    # Both slots counted customers (the sum is across workers), and workers were recycled meanwhile.
    in_slots = [sum(v for (name, _), v in w.items() if name == SCORE_SERIES) for w in workers.values()]
    assert len(in_slots) == 2 and all(in_slots), in_slots
    assert sum(v for (name, _), v in exposition.items() if name == "churn_predictions_total") == len(sent)
    # The first customer's contract and tenure; the second's gender, and the 18 fields it misses.
    refused_by_field = {dict(labels)["field"]: v for (name, labels), v in exposition.items() if "refused" in name}
    expected_refused = {f.name: 1 + (f.name in ("contract", "tenure")) for f in FEATURES} | {"other": 0}
    assert refused_by_field == expected_refused
