"""The WSGI layers: headers every answer carries, and redirects that never name a host a client chose."""

import pytest

from churn.model.schema import SAMPLE_CUSTOMER
from churn.serve.wsgi import secured


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("POST", "/predict", SAMPLE_CUSTOMER), ("POST", "/predict", {}), ("GET", "/model", None), ("GET", "/", None)],
)
def test_every_answer_forbids_sniffing_and_names_the_model(client, method, path, body, served_model):
    answer = client.open(path, method=method, json=body)
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["X-Model-Version"] == served_model.version


@pytest.mark.parametrize("path", ["/", "/docs/", "/docs"])
def test_no_html_page_may_be_framed(client, path):
    answer = client.get(path)
    assert answer.mimetype == "text/html"
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]


def test_a_redirect_names_no_host_a_client_sent(client):
    answer = client.get("/docs", headers={"Host": "evil.example", "X-Forwarded-Proto": "https"})
    assert answer.status_code == 308
    assert answer.headers["Location"] == "/docs/"


@pytest.mark.parametrize(
    ("location", "relative"),
    [
        ("https://evil.example/docs/", "/docs/"),
        ("http://localhost//evil.example/x?a=1", "/evil.example/x?a=1"),
        ("/docs/", "/docs/"),
        ("http://h", "/"),
    ],
)
def test_a_location_is_made_relative_and_never_protocol_relative(location, relative):
    assert dict(secured([("Location", location)]))["Location"] == relative
