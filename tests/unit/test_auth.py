"""API keys: the middleware through Flask's test client, and which endpoints are open.

The checks shared with real gunicorn are in tests/auth_checks.py; the rest of gunicorn's run is in
tests/integration/test_auth_servers.py.
"""

from urllib.parse import unquote

import pytest

from churn.serve.app import create_app
from churn.serve.auth import open_endpoints
from churn.settings import Settings
from tests.auth_checks import BODY, JSON, KEY, OTHER_KEY, KeyChecks


class TestThroughFlask(KeyChecks):
    @pytest.fixture
    def send(self, served_model):
        """send(method, path, headers) -> (status, headers, body), for a service with KEY and OTHER_KEY."""
        client = create_app(served_model, Settings(api_keys=frozenset({KEY, OTHER_KEY}))).test_client()

        def through_flask(method, path, headers=None):
            # The environ a server makes of this request line (the test client would read "//model" as a host).
            path_info, _, query = path.partition("?")
            response = client.open(
                method=method,
                headers={**JSON, **(headers or {})},
                data=BODY if method == "POST" else None,
                environ_overrides={"PATH_INFO": unquote(path_info), "QUERY_STRING": query},
            )
            return response.status_code, response.headers, response.get_data()

        return through_flask


def test_the_open_endpoints_are_the_apps_probes_and_documents(app):
    """Openness is a marker on each view (or its blueprint): the probes and documents have it, and every other
    endpoint (a new one too) needs a key."""
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    opened = open_endpoints(app)
    assert opened == {
        "api.ping",
        "api.live",
        "api.ready",
        "api.openapi_json",
        "web.index",
        "web.static",
        "swagger_ui.show",
    }
    assert {
        "api.predict",
        "api.explain",
        "api.outcomes",
        "api.model_card",
        "api.metrics_exposition",
    } == endpoints - opened
