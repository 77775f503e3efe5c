"""Prometheus metrics: a batch counted at once, worker slots, and what real servers expose after real predictions."""

import json
import os
import shutil
import subprocess
import sys
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from churn import metrics
from churn.schema import SAMPLE_CUSTOMER
from devtools import ROOT, free_port, gunicorn_command, running_server, waitress_command

CONTRACTS = ("month-to-month", "one_year", "two_year")
INTERNET = ("dsl", "fiber_optic", "no")


def customers(n: int, start: int = 0) -> list[dict]:
    """n distinct valid customers whose probabilities spread over the histogram's buckets."""
    return [
        dict(
            SAMPLE_CUSTOMER,
            tenure=(i * 7) % 73,
            contract=CONTRACTS[i % 3],
            internetservice=INTERNET[(i // 3) % 3],
            onlinesecurity="no_internet_service" if INTERNET[(i // 3) % 3] == "no" else "no",
            monthlycharges=20 + (i * 3.3) % 90,
            totalcharges=((i * 7) % 73) * (20 + (i * 3.3) % 90),
        )
        for i in range(start, start + n)
    ]


def samples(text: str) -> dict[tuple, float]:
    """Every sample of an exposition, keyed by (sample name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(url: str) -> dict[tuple, float]:
    response = requests.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return samples(response.text)


def predict(url: str, body) -> requests.Response:
    return requests.post(f"{url}/predict", json=body, timeout=10)


def send(url: str, bodies: list) -> list[float]:
    """POST each body (a customer or a batch) from 4 threads at once; the probabilities answered, in order."""
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda body: predict(url, body), bodies))
    probabilities = []
    for response in responses:
        assert response.status_code == 200, response.text
        answer = response.json()
        probabilities += [a["churn_probability"] for a in (answer if isinstance(answer, list) else [answer])]
    return probabilities


def expect_served(exposition: dict, probabilities: list[float], predict_requests: int) -> None:
    """The exposition counts exactly these predictions, answered in predict_requests 200 responses."""
    assert exposition[("churn_predictions_total", ())] == len(probabilities)
    ok = (("endpoint", "/predict"), ("method", "POST"), ("status", "200"))
    assert exposition[("churn_http_requests_total", ok)] == predict_requests
    bins = {dict(labels)["bin"]: v for (name, labels), v in exposition.items() if name == PROBABILITY_SERIES}
    assert list(bins) == metrics.PROBABILITY_BINS
    for name, count in bins.items():
        low, high = map(float, name.split("-"))
        assert count == sum(low <= p < high or p == high == 1.0 for p in probabilities), name


# ---- observe_scores, in a fresh interpreter: the metrics are globals of the default registry.

PROBABILITY_SERIES = "churn_probability_customers_total"
OBSERVE_BOTH_WAYS = """
import json, sys
from churn import metrics

def counts():
    served = {s.labels["bin"]: s.value for s in metrics.PROBABILITY.collect()[0].samples if s.name.endswith("_total")}
    return [served.get(name, 0) for name in metrics.PROBABILITY_BINS]

values = json.loads(sys.stdin.read())
metrics.observe_scores(values)
batched = counts()
for value in values:
    metrics.observe_scores([value])
print(json.dumps([batched, [b - a for a, b in zip(batched, counts())]]))
"""


def probability_values() -> list[float]:
    edges = [i / 10 for i in range(11)]
    near = [float(np.nextafter(e, d)) for e in edges for d in (-1.0, 2.0) if 0 <= np.nextafter(e, d) <= 1]
    return edges + near + np.random.default_rng(0).random(2000).tolist()


def run_python(code: str, env: dict, stdin: str = "") -> str:
    run = subprocess.run(
        [sys.executable, "-c", code], input=stdin, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.mark.parametrize("multiprocess", [False, True], ids=["one-process", "multiprocess"])
def test_a_batch_counts_what_one_customer_at_a_time_counts(tmp_path, multiprocess):
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if multiprocess:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    values = probability_values()
    batched, one_by_one = json.loads(run_python(OBSERVE_BOTH_WAYS, env, json.dumps(values)))
    assert batched == one_by_one
    assert sum(batched) == len(values)
    assert batched[0] == sum(v < 0.1 for v in values) > 0
    assert batched[9] == sum(v >= 0.9 for v in values) > 0


# A worker that replaces a recycled one takes its slot and carries on from the slot's values: prometheus_client reads
# a value's file when it opens it. Should a release stop doing so, totals would fall at every recycle: this fails.
TAKE_SLOT = """
import types
from churn import metrics
metrics.take_slot(types.SimpleNamespace(metrics_slot=3))
metrics.observe_scores([0.05, 0.95, 0.95])
print(metrics.exposition()[0].decode())
"""


def test_a_new_process_in_a_slot_carries_on_from_its_values(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    run_python(TAKE_SLOT, env)
    exposition = samples(run_python(TAKE_SLOT, env))
    assert exposition[("churn_predictions_total", ())] == 6
    assert exposition[(PROBABILITY_SERIES, (("bin", "0.9-1.0"),))] == 4
    assert {path.name for path in tmp_path.glob("*worker3.db")} == {f"{kind}_worker3.db" for kind in metrics.FILE_KINDS}


def test_slots_are_the_lowest_no_running_worker_holds():
    running = [types.SimpleNamespace(metrics_slot=slot) for slot in (0, 2)]
    new = types.SimpleNamespace()
    metrics.choose_slot(new, running)
    assert new.metrics_slot == 1
    metrics.choose_slot(new, [*running, types.SimpleNamespace(metrics_slot=1)])
    assert new.metrics_slot == 3


# ---- The real servers


def per_process(metrics_dir: Path, scratch: Path) -> dict[str, dict]:
    """Each worker's own samples, read from only its files (named by its slot) in the multiprocess directory."""
    slots = {path.stem.rsplit("_", 1)[1] for path in metrics_dir.glob("*_worker*.db")}
    result = {}
    for slot in slots:
        own = scratch / slot
        own.mkdir(parents=True)
        for path in metrics_dir.glob(f"*_{slot}.db"):
            shutil.copy(path, own)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(own))
        result[slot] = samples(generate_latest(registry).decode())
    return result


def test_metrics_are_summed_across_two_gunicorn_workers(tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    port = free_port()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with running_server(gunicorn_command(port, workers=2), port, env=env) as (url, master):
        probabilities, predict_requests, workers = [], 0, {}
        # Concurrent requests reach both workers; a few rounds at most until each has scored customers.
        for round_ in range(10):
            batch = customers(12, start=100 * round_)
            bodies = [*batch[:6], batch[6:9], batch[9:11], [batch[11]]]
            probabilities += send(url, bodies)
            predict_requests += len(bodies)
            workers = per_process(metrics_dir, tmp_path / f"round{round_}")
            scored = [w.get(("churn_predictions_total", ()), 0) for w in workers.values()]
            if len(scored) == 2 and all(scored):
                break
        assert sorted(workers) == ["worker0", "worker1"], f"metrics files of {sorted(workers)}"
        # Every file prometheus_client writes is of a kind whose blocks metrics reserves (a full disk).
        assert {path.name.rsplit("_", 1)[0] for path in metrics_dir.glob("*.db")} == set(metrics.FILE_KINDS)
        scored = {pid: w.get(("churn_predictions_total", ()), 0) for pid, w in workers.items()}
        assert all(scored.values()), f"a worker scored no customer: {scored}"
        assert sum(scored.values()) == len(probabilities)

        invalid = [dict(SAMPLE_CUSTOMER, tenure=-1), [SAMPLE_CUSTOMER, {"gender": "x"}]]
        assert [predict(url, body).status_code for body in invalid] == [422, 422]

        # Whichever worker answers /metrics, it reads every worker's files.
        for _ in range(6):
            exposition = scrape(url)
            expect_served(exposition, probabilities, predict_requests)
            rejected = (("endpoint", "/predict"), ("method", "POST"), ("status", "422"))
            assert exposition[("churn_http_requests_total", rejected)] == 2
            duration = ("churn_http_request_duration_seconds_count", (("endpoint", "/predict"),))
            assert exposition[duration] == predict_requests + 2


def test_metrics_move_under_waitress():
    port = free_port()
    # One process: the default registry. Unset the variable in case this test runs under one that sets it.
    command = ["env", "-u", "PROMETHEUS_MULTIPROC_DIR", *waitress_command(port)]
    with running_server(command, port) as (url, _):
        before = scrape(url)
        assert before[("churn_predictions_total", ())] == 0
        batch = customers(20)
        probabilities = send(url, [*batch[:5], batch[5:12], batch[12:]])
        expect_served(scrape(url), probabilities, 7)


def test_recycled_workers_leave_no_files_and_totals_stay_exact(tmp_path):
    """Workers recycled every ~50 requests: each new one carries on in a slot a recycled one left, and /metrics
    still counts every request exactly, also when it is scraped while workers come and go."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    log = tmp_path / "gunicorn.log"
    port = free_port()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "GUNICORN_MAX_REQUESTS": "50"}
    env["GUNICORN_MAX_REQUESTS_JITTER"] = "10"
    rounds, per_round = 30, 50
    with running_server(gunicorn_command(port, workers=2), port, env=env, log_path=log) as (url, _):
        with ThreadPoolExecutor(4) as pool:
            for _ in range(rounds):
                statuses = list(pool.map(lambda _: predict(url, SAMPLE_CUSTOMER).status_code, range(per_round)))
                assert statuses == [200] * per_round
                assert requests.get(f"{url}/metrics", timeout=10).status_code == 200
        exposition = scrape(url)
        files = sorted(path.name for path in metrics_dir.iterdir())
    booted = log.read_text().count("Booting worker with pid")
    ok = (("endpoint", "/predict"), ("method", "POST"), ("status", "200"))
    assert exposition[("churn_http_requests_total", ok)] == rounds * per_round
    assert exposition[("churn_predictions_total", ())] == rounds * per_round
    assert sum(v for (name, _), v in exposition.items() if name == PROBABILITY_SERIES) == rounds * per_round
    duration = ("churn_http_request_duration_seconds_count", (("endpoint", "/predict"),))
    assert exposition[duration] == rounds * per_round
    scrapes = (("endpoint", "/metrics"), ("method", "GET"), ("status", "200"))
    assert exposition[("churn_http_requests_total", scrapes)] == rounds  # this scrape counts after it answers
    # Files by pid would have grown with every worker booted; by slot: the master's and those of the slots of
    # two workers (and a third, while one is replaced).
    assert booted >= 20, booted
    assert len(files) <= 2 * 4, files
