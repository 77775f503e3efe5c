"""The WSGI layers around the Flask app: the fast path to the customer endpoints, and request observation.

Both work on the WSGI environ rather than Flask's context-local proxies, which cost more than scoring a customer.
"""

import random
import re
import time
from urllib.parse import urlsplit, urlunsplit

from flask import Flask
from werkzeug.exceptions import HTTPException

from churn import logs, metrics
from churn.errors import ServiceError
from churn.serve.endpoint import CustomerEndpoint

HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
NOSNIFF = ("X-Content-Type-Options", "nosniff")
# An HTML page is never shown in another site's frame (clickjacking); the web page sets a stricter policy of its own.
NO_FRAMING = (("X-Frame-Options", "DENY"), ("Content-Security-Policy", "frame-ancestors 'none'"))
REQUEST_ID = re.compile(logs.REQUEST_ID_PATTERN)


class FastPaths:
    """A POST to a customer endpoint goes straight to it, without Flask's request machinery (context, routing,
    proxies). The endpoint does all the work either way (its Flask view calls it too), so both paths answer alike.
    Flask request hooks would be skipped here: while any is registered, every request goes through Flask.
    """

    def __init__(self, app: Flask):
        self.app, self.flask_wsgi_app = app, app.wsgi_app
        self.paths = {rule.endpoint.rpartition(".")[2]: rule.rule for rule in app.url_map.iter_rules()}
        self.endpoints: dict[str, CustomerEndpoint] = {}  # by path

    def route(self, endpoints: dict[str, CustomerEndpoint]) -> None:
        """endpoints: by the name of the view that serves each (its Flask path)."""
        self.endpoints = {self.paths[name]: endpoint for name, endpoint in endpoints.items()}

    def hooks(self) -> bool:
        app = self.app
        request_hooks = (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs)
        return any(any(funcs.values()) for funcs in request_hooks) or any(app.url_value_preprocessors.values())

    def __call__(self, environ, start_response):
        endpoint = self.endpoints.get(environ.get("PATH_INFO"))
        if endpoint is None or environ.get("REQUEST_METHOD") != "POST" or self.hooks():
            return self.flask_wsgi_app(environ, start_response)
        try:
            answer = endpoint(environ)
        except ServiceError as e:
            return e(environ, start_response)
        start_response("200 OK", answer.headers)
        return [answer.body]


def secured(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """No framing of an HTML page, and a redirect relative: its absolute form would name the Host header a client
    sent (Host: evil.example gives Location: https://evil.example/docs/)."""
    names = {name.lower(): i for i, (name, _) in enumerate(headers)}
    if "location" in names:
        i = names["location"]
        parts = urlsplit(headers[i][1])
        # One leading slash: "//host/x" would be a protocol-relative address of another host.
        path = "/" + parts.path.lstrip("/")
        headers[i] = ("Location", urlunsplit(("", "", path, parts.query, parts.fragment)))
    if "content-type" in names and headers[names["content-type"]][1].startswith("text/html"):
        headers += [header for header in NO_FRAMING if header[0].lower() not in names]
    return headers


class RequestObserver:
    """Request ID, duration, metrics and the access log line, around every request; the served model's version
    (churn.model.scoring.ServedModel.version) on every answer (X-Model-Version) and access line."""

    def __init__(self, wsgi_app, url_map):
        self.wsgi_app = wsgi_app
        self.model_version = ""  # set by churn.serve.app.serve
        self.url_map = url_map
        self.fixed_paths = {rule.rule for rule in url_map.iter_rules() if not rule.arguments}

    def endpoint(self, environ) -> str:
        """The route template, not the raw path, so that metrics have few label values."""
        path = environ.get("PATH_INFO", "")
        if path in self.fixed_paths:
            return path
        try:
            rule, _ = self.url_map.bind_to_environ(environ).match(return_rule=True)
            return rule.rule
        except HTTPException:
            return "unmatched"

    def __call__(self, environ, start_response):
        start = time.perf_counter()
        sent = environ.get("HTTP_X_REQUEST_ID", "")
        # random, not os.urandom: no system call, and reseeded in every forked worker
        request_id = sent if REQUEST_ID.fullmatch(sent) else f"{random.getrandbits(128):032x}"
        record = logs.RequestRecord(request_id, model_version=self.model_version)
        token = logs.current_request.set(record)
        status = []

        def start_with_id(status_line, headers, exc_info=None):
            status.append(status_line)
            headers += (("X-Request-ID", record.id), NOSNIFF, ("X-Model-Version", record.model_version))
            return start_response(status_line, secured(headers), exc_info)

        try:
            # Flask answers with a buffered body, so the response is complete when the app returns.
            body = self.wsgi_app(environ, start_with_id)
            duration = time.perf_counter() - start
            code = status[0][:3] if status else "500"
            method = environ.get("REQUEST_METHOD", "")
            # A client picks the method: unknown ones share one label value, so metrics stay bounded.
            metrics.observe_request(
                method if method in HTTP_METHODS else "other", self.endpoint(environ), code, duration
            )
            logs.log_request(method, environ.get("PATH_INFO", ""), int(code), duration, record)
            return body
        finally:
            logs.current_request.reset(token)
