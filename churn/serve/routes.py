"""The service's routes, as a blueprint: each view is a few lines over the Predictor, and carries its own OpenAPI
operation and whether it is open without an API key. The OpenAPI document (churn.serve.openapi) and the key check
(churn.serve.auth) read those markers, so a new endpoint is one view here.
"""

from flask import Blueprint, Response, current_app, request

from churn import errors, metrics
from churn.errors import ServiceError
from churn.monitor import outcomes as outcome_log
from churn.monitor.live import flush as flush_drift_counts
from churn.monitor.store import StoreError
from churn.serve import openapi
from churn.serve.endpoint import is_json
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


@api.post("/outcomes")
@documented(openapi.OUTCOMES)
def outcomes():
    """Who really churned, for the prediction log's report (churn.monitor.outcomes)."""
    prediction_log = predictor().prediction_log
    if prediction_log is None:
        raise ServiceError(404, errors.NO_PREDICTION_LOG)
    if not is_json(request.content_type or ""):
        raise ServiceError(415, errors.OUTCOMES_NOT_JSON)
    try:
        return outcome_log.receive(prediction_log.url, request.get_data(), predictor().max_customers)
    except outcome_log.OutcomeError as e:
        raise ServiceError(e.status, str(e), e.detail, errors=e.errors) from None
    except StoreError:
        raise ServiceError(503, errors.LOG_UNAVAILABLE) from None


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
    served = predictor()
    if not served.ready:
        raise ServiceError(503, errors.NOT_READY)
    # Ready, since the model serves; detail says what does not (a challenger left out, a reload refused).
    return {"status": "ready", "model_version": served.model.version, "detail": served.problems}


@api.get("/model")
@documented(openapi.MODEL)
def model_card():
    return predictor().card()


@api.get("/metrics")
@documented(openapi.METRICS)
def metrics_exposition():
    flush_drift_counts()  # this process's latest drift counts, not those of up to a second ago
    body, content_type = metrics.exposition(predictor().served_models())
    return Response(body, content_type=content_type)


@api.get("/openapi.json")
@documented(openapi.DOCUMENT, open=True)
def openapi_json():
    return current_app.extensions[openapi.DOCUMENT_KEY]
