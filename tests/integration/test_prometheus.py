"""The Prometheus rules for real: promtool checks them and runs their unit tests; Debian's Prometheus evaluates them
on synthetic counts (PSI against a plain Python computation and evidently's) and on a real gunicorn fed the
dataset's rows, then drifted customers."""

import contextlib
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

import tests.references  # noqa: F401 (evidently under pandas 3, imported in evidently_psi)
from churn.model.schema import FEATURES
from churn.monitor.rules import MIN_CUSTOMERS, WINDOWS
from devtools import free_port, gunicorn_command, running_server, wait_for
from tests.prometheus import RULES, dashboard_queries, running_prometheus

pytestmark = pytest.mark.prometheus


def test_promtool_checks_the_rules_and_passes_their_unit_tests():
    for command in (["check", "rules", RULES.name], ["test", "rules", "rules_test.yml"]):
        run = subprocess.run(["promtool", *command], cwd=RULES.parent, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "SUCCESS" in run.stdout


# ---- PSI in PromQL against Python and evidently, on synthetic counts


def filled(shares: np.ndarray) -> np.ndarray:
    """A zero share replaced as evidently's get_binned_data does (docs/prometheus.md)."""
    smallest = shares[shares > 0].min()
    return np.where(shares == 0, smallest / 1e6 if smallest <= 0.0001 else 0.0001, shares)


def python_psi(live_counts: np.ndarray, reference: np.ndarray) -> float:
    """PSI of live counts against reference counts or shares."""
    live, reference = live_counts / live_counts.sum(), reference / reference.sum()
    seen = (live > 0) | (reference > 0)
    live, reference = filled(live)[seen], filled(reference)[seen]
    return float(np.sum((live - reference) * np.log(live / reference)))


def evidently_psi(live_counts: np.ndarray, reference_counts: np.ndarray) -> float:
    """evidently's PSI of the bins as categories: one value per customer, each its bin's name."""
    from evidently.legacy.calculations.stattests.psi import psi_stat_test

    bins = [f"b{i}" for i in range(len(live_counts))]
    live, reference = pd.Series(np.repeat(bins, live_counts)), pd.Series(np.repeat(bins, reference_counts))
    result = psi_stat_test(reference, live, feature_type="cat", threshold=0.1)
    return float(result.drift_score)


def synthetic_counts(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(live counts, reference counts) per feature, one for each case of the zero rule."""
    plain = rng.integers(50, 3000, 10)
    return {
        "plain": (rng.integers(100, 5000, 10), plain),
        "live_zero": (np.array([0, 0, 800, 1200, 40, 7]), rng.integers(100, 900, 6)),
        # 2 customers in 25,002: the smallest share is below 0.0001, so a zero counts as a millionth of it.
        "live_tiny": (np.array([2, 0, 25_000]), np.array([300, 300, 400])),
        # The reference has an empty bin, and another that live traffic leaves empty too (it adds nothing).
        "reference_zero": (np.array([500, 300, 0, 200]), np.array([0, 600, 0, 400])),
        "same": (plain * 3, plain),
    }


def exposition(features: dict, score: tuple, scale: int) -> str:
    """Counters at live counts × scale (0 or 1) and reference shares from two workers, as /metrics shows them."""
    lines = []
    for (name, labels), (live, reference) in [
        *((("churn_feature", f'feature="{feature}",'), counts) for feature, counts in features.items()),
        (("churn_score", ""), score),
    ]:
        shares = reference / reference.sum()
        for i, (count, share) in enumerate(zip(live, shares, strict=True)):
            lines.append(f'{name}_customers_total{{{labels}bin="{i}"}} {count * scale}')
            for worker in ("worker0", "worker1"):
                lines.append(f'{name}_reference_share{{{labels}bin="{i}",pid="{worker}"}} {float(share)!r}')
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def serving_text(text: str):
    """A /metrics endpoint answering the server's .text, which the test may change; (server, host:port)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = self.server.text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.text = text
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Real Prometheus's PSI of synthetic counts: {(record, feature or None): value}, and the counts."""
    rng = np.random.default_rng(20)
    features = synthetic_counts(rng)
    score = (rng.integers(0, 4000, 10), rng.integers(200, 800, 10))
    counts = {**{("churn:feature_psi", f): c for f, c in features.items()}, ("churn:score_psi", None): score}
    with serving_text(exposition(features, score, 0)) as (server, target):
        with running_prometheus(tmp_path_factory.mktemp("prometheus"), target) as prometheus:
            # Every counter scraped at 0 first: increase() then extrapolates all bins alike (docs/prometheus.md).
            assert wait_for(lambda: prometheus.query("churn_feature_customers_total"), 30), prometheus.scrape_errors()
            server.text = exposition(features, score, 1)
            records = [f"{name}:{window}" for name in ("churn:feature_psi", "churn:score_psi") for window in WINDOWS]

            def recorded() -> dict:
                return {
                    (record, key): value
                    for record in records
                    for key, value in prometheus.values(record, "feature").items()
                }

            assert wait_for(lambda: len(recorded()) == len(WINDOWS) * len(counts), 30), recorded()
            psi = recorded()
    return {(record, key): (value, counts[record.rsplit(":", 1)[0], key]) for (record, key), value in psi.items()}


def test_psi_in_promql_equals_a_python_computation(synthetic):
    for (record, key), (value, (live, reference)) in synthetic.items():
        assert value == pytest.approx(python_psi(live, reference), abs=1e-9), (record, key)
    assert synthetic["churn:feature_psi:1h", "same"][0] == pytest.approx(0, abs=1e-15)
    assert synthetic["churn:feature_psi:1d", "live_tiny"][0] > 1  # the millionth of the smallest share counts


def test_psi_in_promql_equals_evidentlys(synthetic):
    for (record, key), (value, (live, reference)) in synthetic.items():
        assert value == pytest.approx(evidently_psi(live, reference), abs=1e-6), (record, key)


# ---- A real gunicorn scraped by real Prometheus


@pytest.fixture
def monitored(tmp_path):
    """gunicorn (2 workers) and a Prometheus that has scraped its first counts; (url, prometheus)."""
    (tmp_path / "metrics").mkdir()
    port = free_port()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    with running_server(gunicorn_command(port), port, env=env) as (url, _):
        with running_prometheus(tmp_path, f"127.0.0.1:{port}") as prometheus:
            scraped = wait_for(lambda: prometheus.query("churn_feature_customers_total"), 30)
            assert scraped, f"no churn_feature_customers_total scraped from {url}/metrics: {prometheus.scrape_errors()}"
            yield url, prometheus


def feed(url: str, prometheus, rows: pd.DataFrame) -> None:
    """POST the rows, as the dataset spells them, in batches; return once Prometheus has scraped them all and
    evaluated its rules since."""
    records = rows.to_dict("records")
    for start in range(0, len(records), 500):
        response = requests.post(f"{url}/predict", json=records[start : start + 500], timeout=30)
        assert response.status_code == 200, response.text
        # The first answer creates the /predict 200 series: Prometheus must see it before it can see it grow.
        assert wait_for(lambda: prometheus.query('churn_http_requests_total{endpoint="/predict",status="200"}'), 30)
    # Every feature and the score count each customer once (after the answer, so perhaps after the prediction).
    totals = ["sum(churn_predictions_total)", "sum(churn_score_customers_total)"]
    totals += [f'sum(churn_feature_customers_total{{feature="{feature.name}"}})' for feature in FEATURES]

    def scraped() -> list:
        return [prometheus.values(expr).get(None) for expr in totals]

    assert wait_for(lambda: scraped() == [len(records)] * len(totals), 30), scraped()
    prometheus.wait_for_evaluation()


def exposed_psi(url: str) -> dict[str, float]:
    """Python's PSI of each feature from the service's own /metrics: live counts against reference shares."""
    counts, shares = {}, {}
    for family in text_string_to_metric_families(requests.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            into = {"churn_feature_customers_total": counts, "churn_feature_reference_share": shares}
            if sample.name in into:
                into[sample.name].setdefault(sample.labels["feature"], {})[sample.labels["bin"]] = sample.value
    return {
        feature: python_psi(np.array([live[b] for b in shares[feature]]), np.array(list(shares[feature].values())))
        for feature, live in counts.items()
    }


def test_the_datasets_own_customers_do_not_drift(monitored, raw_text):
    url, prometheus = monitored
    feed(url, prometheus, raw_text)
    names = {feature.name for feature in FEATURES}
    for window in WINDOWS:
        psi = prometheus.values(f"churn:feature_psi:{window}", "feature")
        assert set(psi) == names
        assert max(psi.values()) < 0.1, psi
        assert prometheus.values(f"churn:score_psi:{window}")[None] < 0.1
    python = exposed_psi(url)
    for feature, value in prometheus.values("churn:feature_psi:1h", "feature").items():
        assert value == pytest.approx(python[feature], abs=1e-9), feature
    assert prometheus.alerts("ChurnFeatureDrift") == []
    assert prometheus.alerts("ChurnScoreDrift") == []


def test_month_to_month_fiber_customers_raise_feature_drift(monitored, raw_text):
    url, prometheus = monitored
    drifted = raw_text[(raw_text["Contract"] == "Month-to-month") & (raw_text["InternetService"] == "Fiber optic")]
    assert len(drifted) >= MIN_CUSTOMERS
    feed(url, prometheus, drifted)
    alerts = prometheus.alerts("ChurnFeatureDrift")
    assert {a["state"] for a in alerts} <= {"pending", "firing"}
    active = {(a["labels"]["feature"], a["labels"]["severity"]) for a in alerts}
    for feature in ("contract", "internetservice"):
        assert {(feature, "warning"), (feature, "critical")} <= active, active
    assert "gender" not in {feature for feature, _ in active}
    assert prometheus.values("churn:feature_psi:1h", "feature")["gender"] < 0.1
    # Every panel of the dashboard has something to show.
    for query in dashboard_queries():
        assert prometheus.query(query), query
