"""The service's routes, as a blueprint: each view is a few lines over the Predictor, and carries its own OpenAPI
operation and whether it is open without an API key. The OpenAPI document (churn.serve.openapi) and the key check
(churn.serve.auth) read those markers, so a new endpoint is one view here.
"""

from flask import Blueprint, Response, current_app, request

from churn import errors, metrics
from churn.errors import ServiceError
from churn.monitor.live import flush as flush_drift_counts
from churn.serve import openapi
from churn.serve.predictor import Predictor

api = Blueprint("api", __name__)
PREDICTOR = "churn.serve.predictor"  # the app's Predictor, in app.extensions


def documented(operation, open: bool = False):
    """Marks a view with its OpenAPI operation (settings -> dict) and whether it needs no API key."""

    def mark(view):
        view.openapi, view.open = operation, open
        return view

    return mark


def predictor() -> Predictor:
    return current_app.extensions[PREDICTOR]


def customers_answer(name: str) -> Response:
    """The Flask path to a customer endpoint; churn.serve.wsgi.FastPaths takes the same endpoint without Flask."""
    answer = predictor().endpoints[name](request.environ)
    return Response(answer.body, 200, answer.headers)


@api.post("/predict")
@documented(openapi.PREDICT)
def predict():
    return customers_answer("predict")


@api.post("/explain")
@documented(openapi.EXPLAIN)
def explain():
    return customers_answer("explain")


@api.get("/ping")
@documented(openapi.PING, open=True)
def ping():
    return Response("PONG", mimetype="text/plain")


@api.get("/health/live")
@documented(openapi.LIVE, open=True)
def live():
    return {"status": "alive"}


@api.get("/health/ready")
@documented(openapi.READY, open=True)
def ready():
    if not predictor().ready:
        raise ServiceError(503, errors.NOT_READY)
    return {"status": "ready"}


@api.get("/model")
@documented(openapi.MODEL)
def model_card():
    return predictor().card()


@api.get("/metrics")
@documented(openapi.METRICS)
def metrics_exposition():
    flush_drift_counts()  # this process's latest drift counts, not those of up to a second ago
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)


@api.get("/openapi.json")
@documented(openapi.DOCUMENT, open=True)
def openapi_json():
    return current_app.extensions[openapi.DOCUMENT_KEY]
