"""Limits: too many customers and too large a body are 413 under real gunicorn and waitress; gunicorn reads its
timeouts from the environment."""

import json
import re
import subprocess
from pathlib import Path

import pytest
import requests

from churn.model.schema import SAMPLE_CUSTOMER
from devtools import BIN, ROOT
from tests.helpers import customers


def padded(body: dict | list, size: int) -> bytes:
    """The body as JSON, padded with whitespace to exactly size bytes."""
    data = json.dumps(body).encode()
    assert len(data) <= size
    return data + b" " * (size - len(data))


def chunked(data: bytes):
    """A generator body: requests sends it chunked, without Content-Length."""
    for i in range(0, len(data), 1000):
        yield data[i : i + 1000]


def test_too_many_customers_is_413(server):
    assert requests.post(f"{server.url}/predict", json=customers(5), timeout=5).status_code == 200
    response = requests.post(f"{server.url}/predict", json=customers(6), timeout=5)
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "application/json"
    assert "at most 5" in response.json()["error"]


@pytest.mark.parametrize("send", [bytes, chunked], ids=["content-length", "chunked"])
def test_body_size_limit_is_413(server, send):
    url, headers = f"{server.url}/predict", {"Content-Type": "application/json"}
    assert requests.post(url, data=send(padded(SAMPLE_CUSTOMER, 4096)), headers=headers, timeout=5).status_code == 200
    for size in (4097, 1_000_000):
        response = requests.post(url, data=send(padded(SAMPLE_CUSTOMER, size)), headers=headers, timeout=10)
        assert response.status_code == 413, response.text
        assert response.json()["error"] == "The body is larger than 4096 bytes"


def gunicorn_settings(tmp_path: Path, env: dict) -> dict[str, str]:
    # A multiprocess directory of our own, or gunicorn.conf.py would make one that only on_exit removes.
    env = {"PATH": str(BIN), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), **env}
    run = subprocess.run(
        [str(BIN / "gunicorn"), "--print-config", "predict:app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return dict(re.findall(r"^(\w+) += (.*)$", run.stdout, re.MULTILINE))


def test_gunicorn_reads_its_timeouts_from_the_environment(tmp_path):
    defaults = gunicorn_settings(tmp_path, {})
    assert (defaults["timeout"], defaults["graceful_timeout"]) == ("30", "8")
    # Instances would share ~/.gunicorn/gunicorn.ctl, and log an error without a writable home.
    assert defaults["control_socket_disable"] == "True"
    configured = gunicorn_settings(tmp_path, {"GUNICORN_TIMEOUT": "11", "GUNICORN_GRACEFUL_TIMEOUT": "3"})
    assert (configured["timeout"], configured["graceful_timeout"]) == ("11", "3")
