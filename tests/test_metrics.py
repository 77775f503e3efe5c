"""Prometheus metrics: the batch histogram shortcut, and the counts the real servers expose after real predictions."""

import json
import math
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

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
    assert exposition[("churn_probability_count", ())] == len(probabilities)
    assert exposition[("churn_probability_sum", ())] == pytest.approx(math.fsum(probabilities), rel=1e-12)
    buckets = {float(dict(labels)["le"]): v for (name, labels), v in exposition.items() if name.endswith("y_bucket")}
    assert len(buckets) == 11
    for bound, count in buckets.items():
        assert count == sum(p <= bound for p in probabilities), f"le={bound}"


# ---- observe_probabilities, in a fresh interpreter: the metrics are globals of the default registry.

OBSERVE_BOTH_WAYS = """
import json, sys
from prometheus_client import CollectorRegistry, Histogram
from churn import metrics

def samples(histogram):
    return {s.name.rsplit("_", 1)[1] + s.labels.get("le", ""): s.value for s in histogram.collect()[0].samples}

values = json.loads(sys.stdin.read())
bounds = [float(s.labels["le"]) for s in metrics.PROBABILITY.collect()[0].samples if s.name.endswith("_bucket")]
reference = Histogram("reference", "one observe per value", buckets=bounds, registry=CollectorRegistry())
metrics.observe_probabilities(values)
for value in values:
    reference.observe(value)
print(json.dumps([samples(metrics.PROBABILITY), samples(reference)]))
"""


def probability_values(with_nan: bool) -> list[float]:
    edges = [i / 10 for i in range(11)]
    near = [float(np.nextafter(e, d)) for e in edges for d in (-1.0, 2.0)]
    values = edges + near + np.random.default_rng(0).random(2000).tolist()
    return values + [math.nan] if with_nan else values


@pytest.mark.parametrize("multiprocess", [False, True], ids=["one-process", "multiprocess"])
@pytest.mark.parametrize("with_nan", [False, True], ids=["finite", "nan"])
def test_observe_probabilities_writes_what_observe_would(tmp_path, multiprocess, with_nan):
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if multiprocess:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    values = probability_values(with_nan)
    run = subprocess.run(
        [sys.executable, "-c", OBSERVE_BOTH_WAYS],
        input=json.dumps(values),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    batched, one_by_one = json.loads(run.stdout)
    sums = batched.pop("sum"), one_by_one.pop("sum")
    batched.pop("created", None), one_by_one.pop("created", None)
    assert batched == one_by_one
    assert batched["bucket+Inf"] == len(values) - with_nan
    assert batched["bucket0.1"] == sum(v <= 0.1 for v in values) > 0
    if with_nan:
        assert math.isnan(sums[0]) and math.isnan(sums[1])
    else:
        assert sums[0] == pytest.approx(sums[1], rel=1e-12)
    if multiprocess:
        assert {p.name.split("_")[0] for p in tmp_path.glob("*.db")} == {"counter", "histogram"}


# ---- The real servers


def per_process(metrics_dir: Path, scratch: Path) -> dict[int, dict]:
    """Each process's own samples, read from only its files in the multiprocess directory."""
    pids = {int(path.stem.rsplit("_", 1)[1]) for path in metrics_dir.glob("*.db")}
    result = {}
    for pid in pids:
        own = scratch / str(pid)
        own.mkdir(parents=True)
        for path in metrics_dir.glob(f"*_{pid}.db"):
            shutil.copy(path, own)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(own))
        result[pid] = samples(generate_latest(registry).decode())
    return result


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


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
        assert len(workers) == 2, f"metrics files of {sorted(workers)}"
        assert all(parent_pid(pid) == master.pid for pid in workers), "the files are not the workers'"
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
    """Workers recycled every ~50 requests: their values move to the archive files, and /metrics still counts
    every request exactly, also when it is scraped while workers come and go."""
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
    assert exposition[("churn_probability_count", ())] == rounds * per_round
    duration = ("churn_http_request_duration_seconds_count", (("endpoint", "/predict"),))
    assert exposition[duration] == rounds * per_round
    scrapes = (("endpoint", "/metrics"), ("method", "GET"), ("status", "200"))
    assert exposition[("churn_http_requests_total", scrapes)] == rounds  # this scrape counts after it answers
    # Workers' files would have grown with every worker booted; now: the master's, two workers' (and one
    # more being replaced), the archives and the lock.
    assert booted >= 20, booted
    assert len(files) <= 2 * 4 + 2 + 1, files
    assert {"counter_archive.db", "histogram_archive.db"} <= set(files)
