"""predict_test.py finds the service the way the README says: $CHURN_URL, else localhost on $PORT, else on 9696."""

import os
import subprocess
import sys

import pytest

from devtools import ROOT, free_port, gunicorn_command, running_server


def client(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("CHURN_URL", "PORT", "CHURN_API_KEY")}
    return subprocess.run(
        [sys.executable, "predict_test.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def port():
    port = free_port()
    with running_server(gunicorn_command(port), port):
        yield port


def test_the_default_url_follows_port(port):
    run = client(PORT=str(port))
    assert run.returncode == 0, run.stderr
    assert "promo email to this customer" in run.stdout


@pytest.mark.parametrize("path", ["", "/", "/predict"])
def test_churn_url_comes_before_port(port, path):
    nobody = free_port()  # PORT names a port where nothing listens: only CHURN_URL can reach the service
    run = client(CHURN_URL=f"http://127.0.0.1:{port}{path}", PORT=str(nobody))
    assert run.returncode == 0, run.stderr
    assert client(PORT=str(nobody)).returncode == 2


def test_the_url_given_comes_first_and_9696_is_the_last_resort(port):
    run = client("--url", f"http://127.0.0.1:{port}/predict", CHURN_URL=f"http://127.0.0.1:{free_port()}")
    assert run.returncode == 0, run.stderr
    assert "(default: http://localhost:9696/predict)" in " ".join(client("--help").stdout.split())
