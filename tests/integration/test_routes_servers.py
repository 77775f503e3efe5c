"""The probes (/ping, /health/live, /health/ready) and the threshold, against real gunicorn and waitress started
with the limits set by environment."""

import requests

from churn.model.schema import Problems, clean_customer
from tests.helpers import customers


def test_probes(server, served_model):
    ping = requests.get(f"{server.url}/ping", timeout=5)
    assert (ping.status_code, ping.text) == (200, "PONG")
    assert ping.headers["Content-Type"].startswith("text/plain")
    ready = {"status": "ready", "model_version": served_model.version, "detail": []}
    for path, body in (("/health/live", {"status": "alive"}), ("/health/ready", ready)):
        response = requests.get(f"{server.url}{path}", timeout=5)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["X-Model-Version"] == served_model.version
        assert response.json() == body


def test_the_threshold_comes_from_the_environment(server, served_model):
    assert requests.get(f"{server.url}/model", timeout=5).json()["threshold"] == 0.3
    # A customer between 0.3 and 0.5 churns only under this server's threshold.
    customer = next(
        c for c in customers(100) if 0.3 <= served_model.scorer.score_one(clean_customer(c, Problems())) < 0.5
    )
    assert requests.post(f"{server.url}/predict", json=customer, timeout=5).json()["churn"] is True
