"""The model as the service serves it, with no web framework in it: load, check, warm up, predict, explain, the card.

A Predictor owns one customer endpoint per operation (churn.serve.endpoint: from a request's body to its answer's
bytes); the web layer only routes requests to them. The warm-up sends the course's sample customer through those
same endpoints before any request, so a model that loads but cannot answer is found at start, not by a client.
"""

import orjson

from churn import errors
from churn.errors import ServiceError
from churn.model.explain import ExplanationUnavailable, global_explanation, make_explainer
from churn.model.schema import FEATURES, ID_COLUMN, SAMPLE_CUSTOMER
from churn.model.scoring import ServedModel, load_served_model
from churn.monitor.ids import uuid7s
from churn.monitor.predictionlog import PredictionLog
from churn.serve.endpoint import CustomerEndpoint
from churn.settings import Settings

SAMPLE_BODY = orjson.dumps(SAMPLE_CUSTOMER)


def prediction_log(settings: Settings, model: ServedModel) -> PredictionLog | None:
    if settings.prediction_log is None:
        return None
    return PredictionLog(settings.prediction_log, model.version, settings.threshold, settings.prediction_log_queue)


class Predictor:
    def __init__(self, model: ServedModel, settings: Settings):
        self.model = model
        self.scorer = model.scorer
        self.threshold = settings.threshold
        self.max_customers = settings.max_customers
        limits = settings.max_customers, settings.max_body_bytes
        self.endpoints = {
            "predict": CustomerEndpoint(self.predictions, *limits),
            "explain": CustomerEndpoint(self.explanations, *limits),
        }
        self.prediction_log = prediction_log(settings, model)
        for name, endpoint in self.endpoints.items():
            endpoint.name, endpoint.prediction_log = name, self.prediction_log
        try:
            self.explainer = make_explainer(model)
        except ExplanationUnavailable as e:  # /predict still serves; /explain says what to do
            self.explainer = None
            self.endpoints["explain"].unavailable = ServiceError(404, str(e))
        self.ready = self.warm_up()

    @classmethod
    def load(cls, settings: Settings) -> "Predictor":
        return cls(load_served_model(settings.model_file), settings)

    def warm_up(self) -> bool:
        """The sample customer through each endpoint that can answer; False (and every request a 503) when the
        model's answer is not a probability."""
        ready = 0.0 <= self.endpoints["predict"].respond(SAMPLE_BODY).probabilities[0] <= 1.0
        if not ready:
            for endpoint in self.endpoints.values():
                endpoint.unavailable = ServiceError(503, errors.NOT_READY)
        elif self.explainer is not None:
            self.endpoints["explain"].respond(SAMPLE_BODY)
        return ready

    def probabilities(self, customers: list[dict]) -> list[float]:
        scorer = self.scorer
        return [scorer.score_one(customers[0])] if len(customers) == 1 else scorer.score_many(customers)

    def prediction(self, customer: dict, probability: float, prediction_id: str) -> dict:
        # The id, when sent, leads so that a batch answer can be matched to its customers.
        answer = {ID_COLUMN: customer[ID_COLUMN]} if ID_COLUMN in customer else {}
        answer["prediction_id"] = prediction_id
        answer["churn_probability"] = probability
        answer["churn"] = probability >= self.threshold
        return answer

    def predictions(self, customers: list[dict], many: bool) -> tuple[bytes, list[float], list[str]]:
        """The answer's JSON, the probabilities and the prediction ids. orjson writes each float's shortest exact
        text (what repr writes, read back to the same bits), and a whole batch in one call of compiled code."""
        scored, ids = self.probabilities(customers), uuid7s(len(customers))
        answers = list(map(self.prediction, customers, scored, ids))
        return orjson.dumps(answers if many else answers[0]), scored, ids

    def explanations(self, customers: list[dict], many: bool) -> tuple[bytes, list[float], list[str]]:
        """Each answer is the prediction's members, then the explanation's."""
        scored, ids = self.probabilities(customers), uuid7s(len(customers))
        answers = list(map(self.prediction, customers, scored, ids))
        if len(customers) > 1:
            return self.explainer.answers_json(customers, answers), scored, ids
        answers[0].update(self.explainer.explain_one(customers[0]))
        return orjson.dumps(answers if many else answers[0]), scored, ids

    def card(self) -> dict:
        model = self.model
        return {
            "model_file": model.path.name,
            "sha256": model.sha256,
            "sklearn_version": model.sklearn_version,
            "scorer": type(self.scorer).__name__,
            "threshold": self.threshold,
            "features": {f.name: {"description": f.description, **f.constraints()} for f in FEATURES},
            "training": model.training,
            "explanation": global_explanation(self.scorer),
        }
