"""API keys: who may call the service when it is reachable with nothing else in front of it.

CHURN_API_KEYS (comma-separated) or CHURN_API_KEYS_FILE (one key a line, as a secrets manager mounts it); see
churn.settings. With keys set, a request needs `Authorization: Bearer <key>` or `X-API-Key: <key>`, except on the
endpoints marked open (churn.serve.routes.documented; the web page and Swagger UI's blueprints): the probes a load
balancer calls, and the documents a browser needs to ask for a key. Unset: everything is open.
"""

import hmac
import logging
import os
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

from flask import Flask
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from churn import errors
from churn.errors import ServiceError
from churn.settings import SettingError

log = logging.getLogger(__name__)
CHALLENGE = ("WWW-Authenticate", 'Bearer realm="churn"')


def open_endpoints(app: Flask) -> frozenset[str]:
    """The endpoints a request may reach without a key: views marked open, and every view of a blueprint marked open.

    Openness is decided on the endpoint a request routes to, never on the path's spelling, so no variant of a path
    (case, slashes, percent-encoding, query) can reach another endpoint open.
    """
    return frozenset(
        endpoint
        for endpoint, view in app.view_functions.items()
        if getattr(view, "open", False) or getattr(app.blueprints.get(endpoint.rpartition(".")[0]), "open", False)
    )


class ApiKeyAuth:
    """WSGI middleware: 401 for a request without a valid key, unless it routes to an open endpoint.

    read_keys() gives the keys; it is asked again in every new worker process (gunicorn forks new workers on
    SIGHUP), so a key file rotated before a SIGHUP takes effect without a restart. A file that cannot be read then
    keeps the keys the worker had, and says why in the log.
    """

    def __init__(self, wsgi_app, read_keys: Callable[[], frozenset[str]], app: Flask):
        self.wsgi_app = wsgi_app
        self.read_keys = read_keys
        self.keys = self.encoded(read_keys())
        self.url_map = app.url_map
        self.open = open_endpoints(app)
        os.register_at_fork(after_in_child=self.reload)

    @staticmethod
    def encoded(keys: frozenset[str]) -> tuple[bytes, ...]:
        if not keys:
            raise ValueError("ApiKeyAuth needs at least one key")
        return tuple(key.encode() for key in keys)

    def reload(self) -> None:
        try:
            self.keys = self.encoded(self.read_keys())
        except (SettingError, ValueError) as e:
            log.error("API keys not reloaded, the previous ones stay: %s", e)

    def __call__(self, environ, start_response):
        sent = self.sent_keys(environ)
        if (sent and self.valid(sent)) or self.routes_to_open_endpoint(environ):
            return self.wsgi_app(environ, start_response)
        refusal = ServiceError(401, errors.KEY_INVALID if sent else errors.KEY_REQUIRED, headers=[CHALLENGE])
        return refusal(environ, start_response)

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
                return endpoint in self.open
            except RequestRedirect as redirect:
                path = unquote(urlsplit(redirect.new_url).path)
            except HTTPException:
                return False
        return False
