"""The real servers: gunicorn and waitress on a free port, called with predict_test.py; and `make serve`."""

import json
import os
import subprocess
import sys

import pytest

from churn.schema import CUSTOMER, SAMPLE_CUSTOMER
from tests.conftest import ROOT
from tests.servers import free_port, gunicorn_command, running_server, waitress_command


def client(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "predict_test.py", "--url", f"{url}/predict", *args],
        cwd=ROOT,
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
    expected = served_model.scorer.score_one(CUSTOMER.validate_python(SAMPLE_CUSTOMER))
    run = client(server_url)
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout[: run.stdout.rindex("}") + 1])
    assert answer == {"churn_probability": expected, "churn": expected >= 0.5}
    assert "sending promo email to customer 0" in run.stdout


def test_predict_test_sends_a_file_of_customers(server_url, tmp_path, raw_df):
    customers = raw_df.head(3).to_dict(orient="records")
    path = tmp_path / "customers.json"
    path.write_text(json.dumps(customers))
    run = client(server_url, str(path))
    assert run.returncode == 0, run.stderr
    for customer in customers:
        assert f"promo email to {customer['customerID']} (churn probability" in run.stdout


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
