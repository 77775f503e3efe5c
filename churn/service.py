"""The Flask service: create_app(model, settings) wires routes, JSON errors, metrics and request logging."""

import io
import os
import random
import re
import time
from dataclasses import dataclass

from flask import Flask, Response, jsonify, request
from flask_swagger_ui import get_swaggerui_blueprint
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from churn import logs, metrics
from churn.data import clean_text
from churn.openapi import openapi_document
from churn.schema import (
    CUSTOMER,
    FEATURES,
    FEATURES_BY_NAME,
    MAX_BATCH_DEFAULT,
    SAMPLE_CUSTOMER,
    batch_adapter,
)
from churn.scoring import ServedModel
from churn.web import web

HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
JSON_WHITESPACE = b" \t\r\n"


@dataclass(frozen=True)
class Settings:
    threshold: float = 0.5
    max_customers: int = MAX_BATCH_DEFAULT
    max_body_bytes: int = 16 * 1024 * 1024

    def __post_init__(self):
        # A misconfigured service should refuse to start, not answer every request wrongly.
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"CHURN_THRESHOLD must be between 0 and 1, not {self.threshold}")
        if self.max_customers < 1 or self.max_body_bytes < 1:
            raise ValueError("CHURN_MAX_CUSTOMERS and CHURN_MAX_BODY_BYTES must be positive")

    @classmethod
    def from_env(cls, environ=os.environ) -> "Settings":
        return cls(
            threshold=float(environ.get("CHURN_THRESHOLD", cls.threshold)),
            max_customers=int(environ.get("CHURN_MAX_CUSTOMERS", cls.max_customers)),
            max_body_bytes=int(environ.get("CHURN_MAX_BODY_BYTES", cls.max_body_bytes)),
        )


class APIError(Exception):
    def __init__(self, status: int, message: str, detail: list | None = None):
        super().__init__(message)
        self.status, self.message, self.detail = status, message, detail or []


def error_response(status: int, message: str, detail: list | None = None, headers=None) -> Response:
    response = jsonify(error=message, detail=detail or [])
    response.status_code = status
    if headers:
        response.headers.extend(headers)
    return response


def describe_error(error: dict, batch: bool) -> dict:
    """One pydantic error as the API reports it: the batch index, the field as sent, and what is allowed."""
    loc = error["loc"]
    detail = {}
    if batch and loc and isinstance(loc[0], int):
        detail["index"], loc = loc[0], loc[1:]
    field = str(loc[0]) if loc else None
    detail["field"] = field
    detail["message"] = error["msg"]
    feature = FEATURES_BY_NAME.get(clean_text(field)) if field else None
    if feature:
        detail.update(feature.constraints())
    return detail


def validation_error(e: ValidationError, batch: bool, max_customers: int) -> APIError:
    errors = e.errors(include_url=False, include_input=False, include_context=False)
    for error in errors:
        if error["type"] == "json_invalid":
            return APIError(400, f"The body is not valid JSON: {error['msg'].removeprefix('Invalid JSON: ')}")
        if error["type"] == "too_long" and not error["loc"]:
            return APIError(413, f"Too many customers in one request: at most {max_customers}")
    if len(errors) == 1 and not errors[0]["loc"]:
        return APIError(422, "The body must be a customer object or a non-empty array of customer objects")
    details = [describe_error(error, batch) for error in errors]
    fields = sorted({d["field"] for d in details if d["field"]})
    return APIError(422, f"Invalid customer data in {', '.join(fields) or 'the body'}; see detail", details)


def create_app(model: ServedModel, settings: Settings | None = None) -> Flask:
    settings = settings or Settings()
    app = Flask(__name__, static_folder=None)  # the web page's blueprint serves its own assets
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    scorer = model.scorer
    threshold = settings.threshold
    batch = batch_adapter(settings.max_customers)
    validate_one = CUSTOMER.validate_json
    validate_many = batch.validate_json

    # Warm-up: the sample customer goes through the same path a request takes, once, before any request.
    probability = scorer.score_one(CUSTOMER.validate_python(SAMPLE_CUSTOMER))
    ready = 0.0 <= probability <= 1.0

    # Both return the JSON answer and the number of customers scored; repr() keeps every bit of a float.
    def score_one(body: bytes) -> tuple[bytes, int]:
        probability = scorer.score_one(validate_one(body))
        metrics.PROBABILITY.observe(probability)
        churn = "true" if probability >= threshold else "false"
        return f'{{"churn_probability":{probability!r},"churn":{churn}}}'.encode(), 1

    def score_many(body: bytes) -> tuple[bytes, int]:
        probabilities = scorer.score_many(validate_many(body))
        metrics.observe_probabilities(probabilities)
        answers = ",".join(
            f'{{"churn_probability":{p!r},"churn":{"true" if p >= threshold else "false"}}}' for p in probabilities
        )
        return f"[{answers}]".encode(), len(probabilities)

    @app.post("/predict")
    def predict():
        if not ready:
            raise APIError(503, "The model is not ready: the warm-up prediction failed")
        if not request.is_json:
            raise APIError(415, "Send the customer as JSON with the header Content-Type: application/json")
        try:
            body = request.get_data(cache=False)
        except HTTPException:
            raise
        except Exception as e:  # the server's own parser fails on a malformed chunked body as it is read
            raise APIError(400, f"The body could not be read: {e}") from None
        # werkzeug cuts a body sent without Content-Length at the limit, silently: one byte more means too large.
        if len(body) == settings.max_body_bytes and request.environ["wsgi.input"].read(1):
            raise APIError(413, f"The body is larger than {settings.max_body_bytes} bytes")
        is_batch = body.lstrip(JSON_WHITESPACE)[:1] == b"["
        try:
            answer, customers = score_many(body) if is_batch else score_one(body)
        except ValidationError as e:
            raise validation_error(e, is_batch, settings.max_customers) from None
        metrics.PREDICTIONS.inc(customers)
        request.environ["churn.customers"] = customers
        return Response(answer, mimetype="application/json")

    @app.get("/ping")
    def ping():
        return Response("PONG", mimetype="text/plain")

    @app.get("/health/live")
    def live():
        return {"status": "alive"}

    @app.get("/health/ready")
    def health_ready():
        if not ready:
            return error_response(503, "The model is not ready: the warm-up prediction failed")
        return {"status": "ready"}

    model_card = {
        "model_file": model.path.name,
        "sha256": model.sha256,
        "sklearn_version": model.sklearn_version,
        "scorer": type(scorer).__name__,
        "threshold": threshold,
        "features": {f.name: {"description": f.description, **f.constraints()} for f in FEATURES},
        "training": model.training,
    }

    @app.get("/model")
    def model_info():
        return model_card

    @app.get("/metrics")
    def metrics_endpoint():
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)

    document = openapi_document(settings)

    @app.get("/openapi.json")
    def openapi():
        return document

    app.register_blueprint(web)
    # Swagger UI's assets come from the flask-swagger-ui package, so /docs works offline.
    # validatorUrl None: Swagger UI would otherwise send the document's address to validator.swagger.io.
    config = {"app_name": "Churn service", "validatorUrl": None}
    app.register_blueprint(get_swaggerui_blueprint("/docs", "/openapi.json", config=config))

    @app.errorhandler(APIError)
    def api_error(e: APIError):
        return error_response(e.status, e.message, e.detail)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        message = {
            404: f"No such endpoint: {request.path}; the API is described at /openapi.json",
            405: f"{request.method} is not allowed on {request.path}",
            413: f"The body is larger than {settings.max_body_bytes} bytes",
        }.get(e.code, e.description)
        allow = getattr(e, "valid_methods", None)
        return error_response(e.code, message, headers={"Allow": ", ".join(allow)} if allow else None)

    @app.errorhandler(Exception)
    def internal_error(e: Exception):
        app.logger.exception("unhandled error")
        return error_response(500, f"Internal error; quote request ID {logs.request_id.get()}")

    fast_path = FastPredict(app.wsgi_app, score_one, score_many, settings.max_body_bytes) if ready else app.wsgi_app
    app.wsgi_app = RequestObserver(fast_path, app.url_map)
    return app


class FastPredict:
    """WSGI middleware answering a valid POST /predict without Flask's request machinery.

    Flask's per-request work (context, routing, proxies) costs more than validating and scoring a customer.
    A JSON body of known length is scored here with the view's own functions; anything else, and any request
    that fails, goes to Flask, whose /predict view answers it (errors included) exactly as it would anyway.
    """

    def __init__(self, flask_wsgi_app, score_one, score_many, max_body_bytes: int):
        self.flask_wsgi_app = flask_wsgi_app
        self.score_one, self.score_many = score_one, score_many
        self.max_body_bytes = max_body_bytes

    def __call__(self, environ, start_response):
        length = environ.get("CONTENT_LENGTH", "")
        if (
            environ.get("PATH_INFO") != "/predict"
            or environ.get("REQUEST_METHOD") != "POST"
            or environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower() != "application/json"
            or not length.isdigit()
            or int(length) > self.max_body_bytes
        ):
            return self.flask_wsgi_app(environ, start_response)
        body = environ["wsgi.input"].read(int(length))
        try:
            score = self.score_many if body.lstrip(JSON_WHITESPACE)[:1] == b"[" else self.score_one
            answer, customers = score(body)
        except Exception:
            environ["wsgi.input"] = io.BytesIO(body)  # for the view, which reads it again and words the error
            return self.flask_wsgi_app(environ, start_response)
        metrics.PREDICTIONS.inc(customers)
        environ["churn.customers"] = customers
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))])
        return [answer]


class RequestObserver:
    """WSGI middleware: request ID, duration, metrics and the access log line, around every request.

    It works on the WSGI environ rather than Flask's context-local proxies, which cost more than the
    prediction itself; the view reports how many customers it scored in environ["churn.customers"].
    """

    def __init__(self, wsgi_app, url_map):
        self.wsgi_app = wsgi_app
        self.url_map = url_map
        self.fixed_paths = {rule.rule for rule in url_map.iter_rules() if not rule.arguments}
        self.series = {}  # (method, endpoint, status) -> its metric children, looked up once

    def metric_series(self, method: str, endpoint: str, code: str):
        key = (method, endpoint, code)
        if key not in self.series:
            self.series[key] = (metrics.REQUESTS.labels(*key), metrics.REQUEST_DURATION.labels(endpoint))
        return self.series[key]

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
        token = logs.request_id.set(request_id)
        status = []

        def start_with_id(status_line, headers, exc_info=None):
            status.append(status_line)
            headers.append(("X-Request-ID", request_id))
            return start_response(status_line, headers, exc_info)

        try:
            # Flask answers with a buffered body, so the response is complete when the app returns.
            body = self.wsgi_app(environ, start_with_id)
            duration = time.perf_counter() - start
            code = status[0][:3] if status else "500"
            method = environ.get("REQUEST_METHOD", "")
            endpoint = self.endpoint(environ)
            # A client picks the method: unknown ones share one label value, so metrics stay bounded.
            requests, durations = self.metric_series(method if method in HTTP_METHODS else "other", endpoint, code)
            requests.inc()
            durations.observe(duration)
            logs.log_request(
                method, environ.get("PATH_INFO", ""), int(code), duration, environ.get("churn.customers", 0), request_id
            )
            return body
        finally:
            logs.request_id.reset(token)
