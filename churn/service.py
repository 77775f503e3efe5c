"""The Flask service: create_app(model, settings) wires routes, JSON errors, metrics and request logging."""

import os
import random
import re
import time
from dataclasses import dataclass, field

from flask import Flask, Response, request
from flask_swagger_ui import get_swaggerui_blueprint
from pydantic_core import to_json
from werkzeug.exceptions import HTTPException

from churn import logs, metrics
from churn.auth import ApiKeyAuth, load_api_keys
from churn.endpoint import Answer, CustomerEndpoint, error_body
from churn.explain import ExplanationUnavailable, global_explanation, make_explainer
from churn.openapi import openapi_document
from churn.schema import FEATURES, ID_COLUMN, MAX_BATCH_DEFAULT, SAMPLE_CUSTOMER
from churn.scoring import ServedModel
from churn.web import web

HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass(frozen=True)
class Settings:
    threshold: float = 0.5
    max_customers: int = MAX_BATCH_DEFAULT
    max_body_bytes: int = 16 * 1024 * 1024
    api_keys: frozenset[str] = field(default=frozenset(), repr=False)  # a key must never reach a log line

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
            api_keys=load_api_keys(environ),
        )


def error_response(status: int, message: str, headers=None) -> Response:
    return Response(error_body(message), status, headers, mimetype="application/json")


def answer_response(answer: Answer) -> Response:
    return Response(answer.body, answer.status_line, answer.headers)


def create_app(model: ServedModel, settings: Settings | None = None) -> Flask:
    settings = settings or Settings()
    app = Flask(__name__, static_folder=None)  # the web page's blueprint serves its own assets
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    scorer = model.scorer
    threshold = settings.threshold

    def prediction(customer: dict, probability: float) -> dict:
        # The id, when sent, leads so that a batch answer can be matched to its customers.
        answer = {ID_COLUMN: customer[ID_COLUMN]} if ID_COLUMN in customer else {}
        answer["churn_probability"] = probability
        answer["churn"] = probability >= threshold
        return answer

    def probabilities(customers: list[dict]) -> list[float]:
        return [scorer.score_one(customers[0])] if len(customers) == 1 else scorer.score_many(customers)

    # pydantic-core's to_json writes each float's shortest exact text, as repr does, and a batch in one call.
    def predictions(customers: list[dict], many: bool) -> tuple[bytes, list[float]]:
        scored = probabilities(customers)
        answers = list(map(prediction, customers, scored))
        return to_json(answers if many else answers[0]), scored

    def explanations(customers: list[dict], many: bool) -> tuple[bytes, list[float]]:
        scored = probabilities(customers)
        # Each answer is the prediction's members, then the explanation's, written in one pass.
        leading = [to_json(prediction(c, p))[1:-1].decode() for c, p in zip(customers, scored, strict=True)]
        answers = explainer.explain_json(customers, leading)
        if many:  # the brackets on the first and last answers: the large answer is copied once, not thrice
            answers[0] = "[" + answers[0]
            answers[-1] = answers[-1] + "]"
        return ",".join(answers).encode(), scored

    # Warm-up: the sample customer goes through the same path a request takes, once, before any request.
    ready = 0.0 <= predictions([SAMPLE_CUSTOMER], False)[1][0] <= 1.0
    not_ready = None if ready else (503, "The model is not ready: the warm-up prediction failed")
    limits = settings.max_customers, settings.max_body_bytes
    predict_endpoint = CustomerEndpoint(predictions, *limits, not_ready)
    try:
        explainer = make_explainer(model)
        explainer.explain_json([SAMPLE_CUSTOMER])
        no_explainer = not_ready
    except ExplanationUnavailable as e:  # /predict still serves; /explain says what to do
        no_explainer = not_ready or (404, str(e))
    explain_endpoint = CustomerEndpoint(explanations, *limits, no_explainer)

    @app.post("/predict")
    def predict():
        return answer_response(predict_endpoint(request.environ))

    @app.post("/explain")
    def explain():
        return answer_response(explain_endpoint(request.environ))

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
        "explanation": global_explanation(scorer),
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

    fast_path = FastPaths(app, {"/predict": predict_endpoint, "/explain": explain_endpoint})
    # The observer stays outermost, so that a 401 is logged and counted like any answer.
    guarded = ApiKeyAuth(fast_path, settings.api_keys, app.url_map) if settings.api_keys else fast_path
    app.wsgi_app = RequestObserver(guarded, app.url_map)
    # By name, for tests and benchmarks: the fast dispatcher, and the service without its request observation.
    app.extensions["churn.fast_paths"] = fast_path
    app.extensions["churn.unobserved"] = guarded
    return app


class FastPaths:
    """WSGI dispatcher: a POST to an endpoint it knows goes straight to that endpoint, without Flask's request
    machinery (context, routing, proxies), which costs more than scoring a customer. The endpoint does all the
    work either way (its Flask view calls it too), so both paths answer alike. Flask request hooks would be
    skipped here: while any is registered, every request goes through Flask.
    """

    def __init__(self, app: Flask, endpoints: dict[str, CustomerEndpoint]):
        self.app, self.flask_wsgi_app = app, app.wsgi_app
        self.endpoints = endpoints

    def hooks(self) -> bool:
        app = self.app
        request_hooks = (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs)
        return any(any(funcs.values()) for funcs in request_hooks) or any(app.url_value_preprocessors.values())

    def __call__(self, environ, start_response):
        endpoint = self.endpoints.get(environ.get("PATH_INFO"))
        if endpoint is None or environ.get("REQUEST_METHOD") != "POST" or self.hooks():
            return self.flask_wsgi_app(environ, start_response)
        answer = endpoint(environ)
        start_response(answer.status_line, answer.headers)
        return [answer.body]


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
