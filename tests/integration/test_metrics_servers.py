"""Prometheus metrics under real servers: summed across two gunicorn workers, moving under waitress, and exact
while gunicorn recycles its workers."""

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from churn import metrics
from churn.model.schema import SAMPLE_CUSTOMER
from devtools import free_port, gunicorn_command, running_server, waitress_command
from tests.helpers import PROBABILITY_SERIES, customers, samples


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
