"""The prediction log with real parts: gunicorn (2 workers) writing to a real PostgreSQL (initdb and pg_ctl in a
temporary folder) and to SQLite, PostgreSQL stopped under load, and the dataset's test split scored, labelled and
reported with monitor.py."""

import json
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from churn.model.modelfile import read_sidecar
from churn.model.scoring import columns_of
from churn.model.training import split
from churn.monitor import packed
from churn.monitor.ids import uuid7s
from churn.monitor.store import Store
from churn.serve.endpoint import Answer
from devtools import MODEL_FILE, ROOT, free_port, gunicorn_command, running_server, wait_for
from tests.helpers import customers, samples
from tests.postgres import running_postgres


@pytest.fixture(scope="module")
def postgres():
    with running_postgres() as server:
        yield server


def logged_ids(url: str) -> list[str]:
    import psycopg

    Store(url).unpack()
    with psycopg.connect(url) as connection:
        return [str(row[0]) for row in connection.execute("SELECT prediction_id FROM predictions")]


def sqlite_ids(path) -> list[str]:
    with sqlite3.connect(path) as connection:
        return [row[0] for row in connection.execute("SELECT prediction_id FROM predictions")]


def counters(url: str) -> dict[str, float]:
    exposition = samples(requests.get(f"{url}/metrics", timeout=10).text)
    return {name: exposition.get((f"churn_prediction_log_{name}_total", ()), 0.0) for name in ("written", "dropped")}


def predict(url: str, body) -> list[str]:
    answer = requests.post(f"{url}/predict", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    answers = answer.json()
    return [a["prediction_id"] for a in (answers if isinstance(answers, list) else [answers])]


def monitor(*args) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "monitor.py", *map(str, args)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return run


def test_every_answer_reaches_postgresql_by_the_workers_exit_and_outcomes_join(postgres, tmp_path):
    port = free_port()
    env = {"CHURN_PREDICTION_LOG": postgres.url, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    with running_server(gunicorn_command(port), port, env=env) as (url, _):
        ids = [i for n, c in enumerate(customers(40)) for i in predict(url, dict(c, customerID=f"one-{n}"))]
        batch = [dict(c, customerID=f"batch-{i}") for i, c in enumerate(customers(1000))]
        ids += predict(url, batch)
        outcome = requests.post(
            f"{url}/outcomes",
            json=[{"customerID": "batch-0", "churned": True}, {"prediction_id": ids[0], "churned": False}],
        )
    # SIGTERM: each worker's exit hook flushed its queue.
    assert sorted(logged_ids(postgres.url)) == sorted(ids)
    assert outcome.status_code == 200 and outcome.json()["received"] == 2
    report = monitor("report", "--output", tmp_path / "report", "--log", postgres.url)
    assert "report.html" in report.stdout
    groups = json.loads((tmp_path / "report" / "report.json").read_text())["groups"]
    assert sum(g["customers"] for g in groups) >= len(ids) and sum(g["outcomes"] for g in groups) >= 1


def test_postgresql_stopped_under_load_costs_the_overflow_only(postgres, tmp_path):
    """Answers go on while the store is down; what overflows the queue is counted; the rest is written once the
    store is back, and nothing is written twice."""
    port = free_port()
    env = {
        "CHURN_PREDICTION_LOG": postgres.url,
        "CHURN_PREDICTION_LOG_QUEUE": "300",  # per worker
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
    }
    Store(postgres.url).close()  # the schema, for the count before the service starts
    before = set(logged_ids(postgres.url))
    with running_server(gunicorn_command(port), port, env=env) as (url, _):
        answered = predict(url, customers(100))
        assert wait_for(lambda: counters(url)["written"] == 100, timeout=20)
        postgres.stop()
        try:
            with ThreadPoolExecutor(4) as pool:  # load from several clients while the store is down
                bodies = [customers(1, start=i)[0] if i % 2 else customers(20, start=i) for i in range(120)]
                for ids in pool.map(lambda body: predict(url, body), bodies):
                    answered += ids
            down = counters(url)
            assert down["dropped"] > 0  # more than two queues of 300 were answered
        finally:
            postgres.start()
        assert wait_for(lambda: sum(counters(url).values()) == len(answered), timeout=60)
        final = counters(url)
    logged = set(logged_ids(postgres.url)) - before
    assert logged <= set(answered)
    assert len(logged) == len(answered) - final["dropped"] == final["written"]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_readers_unpacking_at_once_unpack_each_customer_once(kind, postgres, tmp_path):
    """Three readers (a report, POST /outcomes in two workers) unpacking the same packs at the same time, each pack
    written twice (a retry after a lost commit): each customer's row is written once, and no reader fails."""
    url = postgres.url if kind == "postgresql" else f"sqlite:///{tmp_path / 'log.db'}"
    store = Store(url)
    store.unpack()
    before = set(logged_ids(url)) if kind == "postgresql" else set()
    ids = []
    for n in range(30):  # more packs than one reader takes at once
        people = customers(50, start=50 * n)
        people[0] |= {"customerID": f"with a NUL\x00{n}"}  # which PostgreSQL's text cannot hold
        answer = Answer(b"", [0.5] * 50, uuid7s(50), people, None, columns_of(people))
        pack = packed.pack([packed.queued("predict", answer)], "v1", 0.5)
        store.write_packed(pack)
        store.write_packed(pack)
        ids += answer.prediction_ids
    store.close()

    def unpack_alone(_) -> int:
        reader = Store(url)
        try:
            return reader.unpack()
        finally:
            reader.close()

    with ThreadPoolExecutor(3) as pool:
        unpacked = list(pool.map(unpack_alone, range(3)))
    if kind == "postgresql":  # each pack went to one reader
        assert sum(unpacked) == 2 * len(ids)
    logged = logged_ids(url) if kind == "postgresql" else sqlite_ids(tmp_path / "log.db")
    assert sorted(set(logged) - before) == sorted(ids) and len(logged) == len(set(logged))


def test_the_dataset_scored_and_labelled_gives_train_pys_test_auc(raw_df, clean_df, tmp_path):
    """The test split through the service (SQLite log), its Churn column loaded as outcomes with monitor.py, and
    the report's AUC is the one train.py measured on the same split."""
    test_rows = raw_df.loc[split(clean_df)[1].index]
    log = f"sqlite:///{tmp_path / 'log.db'}"
    port = free_port()
    env = {"CHURN_PREDICTION_LOG": log, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    with running_server(gunicorn_command(port), port, env=env) as (url, _):
        for start in range(0, len(test_rows), 500):
            predict(url, json.loads(test_rows.iloc[start : start + 500].to_json(orient="records")))
    test_rows[["customerID", "Churn"]].to_csv(tmp_path / "outcomes.csv", index=False)
    loaded = json.loads(monitor("outcomes", tmp_path / "outcomes.csv", "--log", log).stdout)
    assert loaded == {"received": len(test_rows), "matched": len(test_rows), "unmatched": 0}
    monitor("report", "--output", tmp_path / "report", "--log", log)
    [group] = json.loads((tmp_path / "report" / "report.json").read_text())["groups"]
    assert group["customers"] == group["outcomes"] == len(test_rows)
    assert abs(group["auc"] - read_sidecar(MODEL_FILE)[0]["test_auc"]) <= 1e-12
    assert group["auc_95"][0] < group["auc"] < group["auc_95"][1]
    html = (tmp_path / "report" / "report.html").read_text()
    assert "http" not in html.replace("http-equiv", "")  # no CDN: everything it shows is beside it
    with sqlite3.connect(tmp_path / "log.db") as connection:
        assert connection.execute("SELECT count(DISTINCT customer_id) FROM predictions").fetchone()[0] == len(test_rows)
