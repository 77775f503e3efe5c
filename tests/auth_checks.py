"""API keys: the checks of a protected service that run both through Flask's test client (tests/unit/test_auth.py)
and through real gunicorn (tests/integration/test_auth_servers.py). Each subclass of KeyChecks provides the fixture
send(method, path, headers) -> (status, headers, body), for a service with KEY and OTHER_KEY."""

import json

import pytest

from churn.model.schema import SAMPLE_CUSTOMER

KEY = "k3y-Only.The_Test~Knows"
OTHER_KEY = "second-key-for-rotation"
BODY = json.dumps(SAMPLE_CUSTOMER).encode()
JSON = {"Content-Type": "application/json"}

# Every way of spelling a protected request that a router, a proxy or a server might read as another path.
# None may be answered without a key.
PROTECTED = [
    ("POST", "/predict"),  # a valid body of known length: the fast path
    ("HEAD", "/predict"),
    ("GET", "/predict"),
    ("OPTIONS", "/predict"),
    ("POST", "/predict/"),
    ("POST", "//predict"),
    ("POST", "/predict?api_key=x"),
    ("POST", "/PREDICT"),
    ("POST", "/%70redict"),
    ("POST", "/predict%2F"),
    ("POST", "/./predict"),
    ("POST", "/ping/../predict"),
    ("POST", "/health/../predict"),
    ("POST", "/explain"),
    ("POST", "/explain/"),
    ("POST", "/EXPLAIN"),
    ("POST", "//explain"),
    ("GET", "/model"),
    ("HEAD", "/model"),
    ("GET", "/model/"),
    ("GET", "//model"),
    ("GET", "/MODEL"),
    ("GET", "/metrics"),
    ("GET", "/metrics?x=/ping"),
    ("GET", "/%6detrics"),
    ("GET", "/ping/"),
    ("GET", "/PING"),
    ("GET", "/health/"),
    ("GET", "/health/live/"),
    ("GET", "/health/anything"),
    ("GET", "/nowhere"),
]
# The probes, and the documents a browser needs before it can ask for a key.
OPEN = [
    ("GET", "/ping", 200),
    ("HEAD", "/ping", 200),
    ("GET", "/ping?x=1", 200),
    # Spellings the app itself routes to /ping: still the probe, whatever the spelling.
    ("GET", "/%70ing", 200),
    ("GET", "//ping", 200),
    ("GET", "/health/live", 200),
    ("GET", "/health/ready", 200),
    ("GET", "/", 200),
    ("GET", "/openapi.json", 200),
    ("GET", "/docs", 308),
    ("GET", "/docs/", 200),
    ("GET", "/docs/swagger-ui.css", 200),
]


def expect_401(status, headers, body, message: str) -> None:
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    if body:  # HEAD has none
        assert headers["Content-Type"] == "application/json"
        assert json.loads(body) == {"error": message, "detail": []}


REQUIRED = "An API key is required: send Authorization: Bearer <key> or X-API-Key: <key>"


class KeyChecks:
    """Every spelling of a protected request, the open endpoints, and the keys a client may send."""

    @pytest.mark.parametrize(("method", "path"), PROTECTED)
    def test_no_spelling_of_a_protected_request_passes_without_a_key(self, send, method, path):
        status, headers, body = send(method, path)
        expect_401(status, headers, body, REQUIRED)
        status, headers, body = send(method, path, {"Authorization": "Bearer wrong"})
        expect_401(status, headers, body, "The API key is not valid")

    @pytest.mark.parametrize(("method", "path"), PROTECTED)
    def test_with_a_key_the_app_answers_as_it_would(self, send, method, path):
        status, _, _ = send(method, path, {"X-API-Key": KEY})
        assert status != 401

    @pytest.mark.parametrize(("method", "path", "status"), OPEN)
    def test_probes_and_documents_need_no_key(self, send, method, path, status):
        assert send(method, path)[0] == status

    @pytest.mark.parametrize(
        "headers",
        [
            {"Authorization": f"Bearer {KEY}"},
            {"Authorization": f"bearer   {KEY} "},
            {"Authorization": f"Bearer {OTHER_KEY}"},
            {"X-API-Key": KEY},
            {"X-API-Key": f" {OTHER_KEY}"},
            {"Authorization": "Bearer wrong", "X-API-Key": KEY},
        ],
        ids=["bearer", "bearer-spaced", "bearer-second-key", "x-api-key", "x-api-key-second", "either-header"],
    )
    def test_a_valid_key_in_either_header_scores(self, send, headers):
        status, _, body = send("POST", "/predict", headers)
        assert status == 200, body
        assert 0 <= json.loads(body)["churn_probability"] <= 1

    @pytest.mark.parametrize(
        "headers",
        [
            {"Authorization": KEY},
            {"Authorization": f"Basic {KEY}"},
            {"Authorization": "Bearer"},
            {"Authorization": f"Bearer {KEY}x"},
            {"Authorization": f"Bearer {KEY[:-1]}"},
            {"X-API-Key": KEY.upper()},
            {"X-API-Key": f"{KEY},{OTHER_KEY}"},
            {"X-Api-Key-Extra": KEY},
        ],
        ids=["no-scheme", "basic", "empty-bearer", "longer", "shorter", "case", "two-keys", "other-header"],
    )
    def test_anything_but_a_valid_key_is_401(self, send, headers):
        status, response_headers, body = send("POST", "/predict", headers)
        assert status == 401
        assert response_headers["WWW-Authenticate"].startswith("Bearer")
        assert KEY.encode() not in body and KEY.upper().encode() not in body
