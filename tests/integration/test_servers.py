"""The real servers: gunicorn and waitress on a free port, called with predict_test.py; and `make serve`."""

import json
import os
import subprocess
import sys

import pytest
import requests

from churn.model.schema import SAMPLE_CUSTOMER, Problems, clean_customer
from devtools import ROOT, free_port, gunicorn_command, running_server, waitress_command


def client(url: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "predict_test.py", "--url", f"{url}/predict", *args],
        cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if k != "CHURN_API_KEY"}, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(params=["gunicorn", "waitress"])
def server_url(request):
    port = free_port()
    command = gunicorn_command(port) if request.param == "gunicorn" else waitress_command(port)
    with running_server(command, port) as (url, _):
        yield url


def test_predict_test_against_the_real_server(server_url, served_model):
    expected = served_model.scorer.score_one(clean_customer(SAMPLE_CUSTOMER, Problems()))
    run = client(server_url)
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout[: run.stdout.rindex("}") + 1])
    assert answer == {"prediction_id": answer["prediction_id"], "churn_probability": expected, "churn": expected >= 0.5}
    assert "promo email to this customer (churn probability" in run.stdout
    assert "customer 0" not in run.stdout


def test_predict_test_sends_a_file_of_customers(server_url, tmp_path, raw_df):
    customers = raw_df.head(3).to_dict(orient="records")
    del customers[1]["customerID"]  # named by its position instead
    path = tmp_path / "customers.json"
    path.write_text(json.dumps(customers))
    run = client(server_url, str(path))
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stdout.splitlines() if "promo email to" in line]
    names = [customers[0]["customerID"], "customer 1", customers[2]["customerID"]]
    assert [line.split(" to ")[1].split(" (")[0] for line in lines] == names


def test_predict_test_sends_the_api_key(tmp_path):
    port = free_port()
    with running_server(gunicorn_command(port), port, env={"CHURN_API_KEYS": "predict-test-key"}) as (url, _):
        refused = client(url)
        assert refused.returncode == 1
        assert (
            "HTTP 401" in refused.stderr and "(no key was given): pass --api-key or set CHURN_API_KEY" in refused.stderr
        )
        wrong = client(url, "--api-key", "wrong")
        assert wrong.returncode == 1 and "the key given was refused" in wrong.stderr
        assert client(url, "--api-key", "predict-test-key").returncode == 0
        assert client(url, env={"CHURN_API_KEY": "predict-test-key"}).returncode == 0


def test_predict_test_reports_an_http_error(server_url, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(dict(SAMPLE_CUSTOMER, contract="forever")))
    run = client(server_url, str(path))
    assert run.returncode == 1
    assert "HTTP 422" in run.stderr and "contract" in run.stderr


def test_predict_test_reports_a_connection_error():
    run = client(f"http://127.0.0.1:{free_port()}")
    assert run.returncode == 2
    assert "cannot reach" in run.stderr


def test_make_serve_answers_the_sample_customer():
    port = free_port()
    # gunicorn.conf.py binds 0.0.0.0; tests keep to loopback, and GUNICORN_CMD_ARGS overrides the file.
    env = {"GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port}", "MAKEFLAGS": ""}
    with running_server(["make", "--no-print-directory", "serve"], port, env=env) as (url, _):
        run = client(url)
        assert run.returncode == 0, run.stderr
        assert '"churn_probability"' in run.stdout


def test_port_and_workers_come_from_the_environment(tmp_path):
    env = {**os.environ, "PORT": "5000", "WEB_CONCURRENCY": "3", "GUNICORN_TIMEOUT": "11"}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)  # else reading the file makes a folder for metrics
    code = "import runpy; c = runpy.run_path('gunicorn.conf.py'); print(c['bind'], c['workers'], c['timeout'])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0.0.0.0:5000", "3", "11"]


def test_gunicorns_own_metrics_folder_is_removed_after_a_run_and_after_a_failed_start(tmp_path):
    # gunicorn.conf.py makes the folder with tempfile, which honours TMPDIR: a folder of this test's own.
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(TMPDIR=str(tmp_path), GUNICORN_MAX_REQUESTS="5", GUNICORN_MAX_REQUESTS_JITTER="1")
    port = free_port()
    with running_server(gunicorn_command(port), port, env=env) as (url, _):
        # Workers exit (recycled) along the way; their exit must not remove the master's folder.
        for _ in range(30):
            assert client(url).returncode == 0
        assert requests.get(f"{url}/metrics", timeout=10).status_code == 200
        assert len(list(tmp_path.glob("churn-metrics-*"))) == 1
    assert list(tmp_path.glob("churn-metrics-*")) == []

    bad_model = tmp_path / "bad.bin"
    bad_model.write_bytes(b"not a model")
    failed = subprocess.run(
        gunicorn_command(free_port()), cwd=ROOT, env={**env, "MODEL_FILE": str(bad_model)}, capture_output=True
    )
    assert failed.returncode != 0
    assert list(tmp_path.glob("churn-metrics-*")) == []


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/ping", {"SCRIPT_NAME": "/evil"}, 200),
        ("/predict", {"SCRIPT_NAME": "/evil"}, 405),
        # Honoured, SCRIPT_NAME would turn /ping/model into the endpoint /model.
        ("/ping/model", {"SCRIPT_NAME": "/ping"}, 404),
        ("/ping", {"PATH_INFO": "/model"}, 200),
        ("/ping", {"REMOTE_USER": "admin"}, 200),
        ("/ping", {"X_FORWARDED_PROTO": "https", "X-Forwarded-Proto": "http"}, 200),
        ("/ping", {"X-Forwarded-Proto": "https", "X-Forwarded-Ssl": "off"}, 400),  # gunicorn: contradictory
    ],
)
def test_no_header_from_a_trusted_peer_gets_a_5xx(gunicorn_url, path, headers, status):
    """gunicorn trusts forwarding headers from loopback (forwarded_allow_ips): this client is such a peer."""
    response = requests.get(f"{gunicorn_url}{path}", headers=headers, timeout=10)
    assert response.status_code == status, response.text


@pytest.fixture(scope="module")
def gunicorn_url():
    port = free_port()
    with running_server(gunicorn_command(port), port) as (url, _):
        yield url
