"""API keys: who may call the service when it is reachable with nothing else in front of it.

CHURN_API_KEYS (comma-separated) or CHURN_API_KEYS_FILE (one key a line, as a secrets manager mounts it).
With keys set, a request needs `Authorization: Bearer <key>` or `X-API-Key: <key>`, except on the endpoints
that show no data: the probes a load balancer calls, and the documents a browser needs to ask for a key
(the web page and its assets, Swagger UI and the OpenAPI document it reads). Unset: everything is open.
"""

import hmac
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, RequestRedirect

from churn.endpoint import error_body

# Flask endpoint names. Openness is decided on the endpoint the request routes to, never on the path's
# spelling, so no variant of a path (case, slashes, percent-encoding, query) can reach another endpoint open.
OPEN_ENDPOINTS = frozenset({"ping", "live", "health_ready", "web.index", "web.static", "openapi", "swagger_ui.show"})
# Printable ASCII without space: what a header carries unchanged through every client and proxy.
KEY_CHARACTERS = frozenset(chr(c) for c in range(0x21, 0x7F))


def load_api_keys(environ=os.environ) -> frozenset[str]:
    """The configured keys; empty when neither variable is set. Raises ValueError on a configuration that
    would leave the service unusable or open by mistake. No message quotes a key."""
    listed, path = environ.get("CHURN_API_KEYS"), environ.get("CHURN_API_KEYS_FILE")
    if listed is None and path is None:
        return frozenset()
    if listed is not None and path is not None:
        raise ValueError("Set CHURN_API_KEYS or CHURN_API_KEYS_FILE, not both")
    if path is not None:
        source = f"CHURN_API_KEYS_FILE ({path})"
        try:
            candidates = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{source} cannot be read: {getattr(e, 'strerror', None) or type(e).__name__}") from None
    else:
        source = "CHURN_API_KEYS"
        candidates = listed.split(",")
    keys = [key.strip() for key in candidates if key.strip()]
    if not keys:
        raise ValueError(f"{source} is set but holds no key; unset it to leave the service open")
    for number, key in enumerate(keys, 1):
        if not set(key) <= KEY_CHARACTERS:
            raise ValueError(f"Key {number} of {source} has characters other than printable ASCII without spaces")
    return frozenset(keys)


class ApiKeyAuth:
    """WSGI middleware: 401 for a request without a valid key, unless it routes to an open endpoint."""

    def __init__(self, wsgi_app, keys: frozenset[str], url_map: Map):
        if not keys:
            raise ValueError("ApiKeyAuth needs at least one key")
        self.wsgi_app = wsgi_app
        self.keys = tuple(key.encode() for key in keys)
        self.url_map = url_map

    def __call__(self, environ, start_response):
        sent = self.sent_keys(environ)
        if (sent and self.valid(sent)) or self.routes_to_open_endpoint(environ):
            return self.wsgi_app(environ, start_response)
        message = (
            "The API key is not valid"
            if sent
            else ("An API key is required: send Authorization: Bearer <key> or X-API-Key: <key>")
        )
        body = error_body(message)
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("WWW-Authenticate", 'Bearer realm="churn"'),
        ]
        start_response("401 Unauthorized", headers)
        return [body]

    @staticmethod
    def sent_keys(environ) -> list[bytes]:
        sent = []
        scheme, _, credentials = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            sent.append(credentials.strip())
        if api_key := environ.get("HTTP_X_API_KEY", "").strip():
            sent.append(api_key)
        # WSGI gives header values as latin-1 strings: this restores the bytes the client sent.
        return [value.encode("latin-1", "replace") for value in sent]

    def valid(self, sent: list[bytes]) -> bool:
        # Every candidate against every key, with no early exit: the time taken tells nothing of which key
        # came close, or whether any did.
        matched = False
        for candidate in sent:
            for key in self.keys:
                matched |= hmac.compare_digest(candidate, key)
        return matched

    def routes_to_open_endpoint(self, environ) -> bool:
        adapter = self.url_map.bind_to_environ(environ)
        path = environ.get("PATH_INFO", "")
        for _ in range(2):  # a redirect (e.g. /docs to /docs/) is open when where it leads is
            try:
                endpoint, _values = adapter.match(path, method=environ.get("REQUEST_METHOD"))
                return endpoint in OPEN_ENDPOINTS
            except RequestRedirect as redirect:
                path = unquote(urlsplit(redirect.new_url).path)
            except HTTPException:
                return False
        return False
