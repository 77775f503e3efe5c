"""The one error shape: ServiceError as a WSGI answer and through Flask, and nginx's own pages in the same words."""

import json
import re

from churn import errors, logs
from churn.errors import ServiceError
from churn.settings import Settings
from devtools import ROOT

NGINX_HTTP = ROOT / ".platform" / "nginx" / "conf.d" / "churn_http.conf"


def test_a_service_error_is_the_one_json_shape():
    error = ServiceError(422, "Invalid", [{"field": "tenure"}], headers=[("Allow", "POST")], errors=1)
    status, headers, body = error.as_wsgi()
    assert status == "422 Unprocessable Content"
    assert dict(headers) == {"Content-Type": "application/json", "Content-Length": str(len(body)), "Allow": "POST"}
    assert json.loads(body) == {"error": "Invalid", "detail": [{"field": "tenure"}], "errors": 1}


def test_a_service_error_answers_as_a_wsgi_app():
    started = []
    body = ServiceError(401, errors.KEY_REQUIRED)({}, lambda status, headers: started.append((status, headers)))
    assert started[0][0] == "401 Unauthorized"
    assert json.loads(b"".join(body)) == {"error": errors.KEY_REQUIRED, "detail": []}


def test_flask_errors_take_the_shape(client):
    answer = client.delete("/predict")
    assert answer.status_code == 405 and set(answer.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}
    assert answer.get_json() == {"error": "DELETE is not allowed on /predict", "detail": []}
    assert client.get("/nowhere").get_json()["error"].startswith("No such endpoint: /nowhere")


def test_nginx_says_what_the_service_says():
    """The proxy's own 413 and its request IDs are the service's: one sentence, one pattern."""
    config = NGINX_HTTP.read_text()
    sentence = re.search(r"^\s*413\s+\"([^\"]+)\";", config, re.MULTILINE).group(1)
    assert sentence == errors.too_large(Settings().max_body_bytes)
    assert f"client_max_body_size {Settings().max_body_bytes};" in config
    pattern = re.search(r'"~\^(\S+)\$"\s+\$http_x_request_id;', config).group(1)
    assert pattern == logs.REQUEST_ID_PATTERN
