"""The service's one error type and its one JSON shape: {"error": sentence, "detail": [...], counts...}.

ServiceError is raised wherever a request cannot be answered (the customer endpoints, API keys, Flask's routing)
and becomes an answer in one place, as_wsgi(); Flask's own errors are mapped to it by register(). Each sentence a
client can read is written here once; nginx's pages (.platform) say the same, and a test compares them.
"""

import json

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

STATUS_LINES = {
    200: "200 OK",
    400: "400 Bad Request",
    401: "401 Unauthorized",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    413: "413 Content Too Large",
    415: "415 Unsupported Media Type",
    422: "422 Unprocessable Content",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}
NOT_READY = "The model is not ready: the warm-up prediction failed"
NOT_JSON = "Send the customer as JSON with the header Content-Type: application/json"
NO_CUSTOMERS = "The body must be a customer object or a non-empty array of customer objects"
KEY_REQUIRED = "An API key is required: send Authorization: Bearer <key> or X-API-Key: <key>"
KEY_INVALID = "The API key is not valid"
NO_PREDICTION_LOG = "No prediction log is configured (CHURN_PREDICTION_LOG): outcomes would have nothing to join"
OUTCOMES_NOT_JSON = "Send the outcomes as a JSON array with the header Content-Type: application/json"
LOG_UNAVAILABLE = "The prediction log's store is unavailable; send the outcomes again later"


def too_large(max_body_bytes: int) -> str:
    return f"The body is larger than {max_body_bytes} bytes"


def too_many(max_customers: int) -> str:
    return f"Too many customers in one request: at most {max_customers}"


def too_many_fields(max_fields: int) -> str:
    return f"A customer has at most {max_fields} fields"


def error_body(message: str, detail: list | None = None, **counts) -> bytes:
    return json.dumps({"error": message, "detail": detail or [], **counts}, separators=(",", ":")).encode()


class ServiceError(Exception):
    """A request the service refuses: the status, a sentence, the details (e.g. one per invalid field) and counts."""

    def __init__(self, status: int, message: str, detail: list | None = None, headers=(), **counts):
        super().__init__(message)
        self.status, self.message, self.detail, self.counts = status, message, detail, counts
        self.headers = list(headers)

    def as_wsgi(self) -> tuple[str, list[tuple[str, str]], bytes]:
        """(status line, headers, body): the one place an error becomes an answer."""
        body = error_body(self.message, self.detail, **self.counts)
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *self.headers]
        return STATUS_LINES.get(self.status, f"{self.status} Error"), headers, body

    def __call__(self, environ, start_response):
        """As a WSGI app: what a middleware answers with."""
        status, headers, body = self.as_wsgi()
        start_response(status, headers)
        return [body]


def write_gunicorn_refusal(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn.util.write_error's replacement (gunicorn.conf.py): what gunicorn refuses before the app sees it
    (over 100 headers, a control character in a header, a malformed request line) in the one JSON shape rather
    than gunicorn's HTML page, behind nginx or not."""
    from gunicorn.util import write_nonblock

    body = error_body(f"{reason}: {mesg}" if mesg else reason)
    head = f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
    write_nonblock(sock, f"{head}Content-Length: {len(body)}\r\n\r\n".encode("latin-1") + body)


def as_response(error: ServiceError) -> Response:
    status, headers, body = error.as_wsgi()
    return Response(body, status, headers)


def from_http(e: HTTPException, max_body_bytes: int) -> ServiceError:
    """Flask's and werkzeug's own refusals (routing, methods, body size) in the service's words."""
    message = {
        404: f"No such endpoint: {request.path}; the API is described at /openapi.json",
        405: f"{request.method} is not allowed on {request.path}",
        413: too_large(max_body_bytes),
    }.get(e.code, e.description)
    allow = getattr(e, "valid_methods", None)
    return ServiceError(e.code, message, headers=[("Allow", ", ".join(allow))] if allow else ())


def register(app: Flask, max_body_bytes: int, request_id) -> None:
    """Every error a Flask view or Flask itself raises answers in the one JSON shape."""
    app.register_error_handler(ServiceError, as_response)
    app.register_error_handler(HTTPException, lambda e: as_response(from_http(e, max_body_bytes)))

    def internal_error(e: Exception) -> Response:
        app.logger.exception("unhandled error")
        return as_response(ServiceError(500, f"Internal error; quote request ID {request_id()}"))

    app.register_error_handler(Exception, internal_error)
