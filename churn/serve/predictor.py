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
from churn.monitor.drift import SCORE
from churn.monitor.live import DriftCounts
from churn.serve.endpoint import CustomerEndpoint
from churn.settings import Settings

SAMPLE_BODY = orjson.dumps(SAMPLE_CUSTOMER)


class Predictor:
    def __init__(self, model: ServedModel, settings: Settings):
        self.model = model
        self.scorer = model.scorer
        self.threshold = settings.threshold
        limits = settings.max_customers, settings.max_body_bytes
        self.endpoints = {
            "predict": CustomerEndpoint(self.predictions, *limits),
            "explain": CustomerEndpoint(self.explanations, *limits),
        }
        # Counting customers in the reference's bins (churn.monitor.live); off for a model without a reference.
        self.drift, self.drift_problem = DriftCounts.of(model.reference)
        for endpoint in self.endpoints.values():
            endpoint.drift = self.drift
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
        return self.scored(customers)[0]

    def scored(self, customers: list[dict]) -> tuple[list[float], dict | None]:
        """The probabilities, and for a batch its columns as the scorer read them with the probabilities as an
        array under SCORE (what the drift counts read, churn.monitor.live); None for one customer."""
        scorer = self.scorer
        if len(customers) == 1:
            return [scorer.score_one(customers[0])], None
        columns = scorer.columns(customers)
        probabilities = scorer.score_columns(columns)
        return probabilities.tolist(), columns | {SCORE: probabilities}

    def prediction(self, customer: dict, probability: float) -> dict:
        # The id, when sent, leads so that a batch answer can be matched to its customers.
        answer = {ID_COLUMN: customer[ID_COLUMN]} if ID_COLUMN in customer else {}
        answer["churn_probability"] = probability
        answer["churn"] = probability >= self.threshold
        return answer

    def predictions(self, customers: list[dict], many: bool) -> tuple[bytes, list[float], dict | None]:
        """The answer's JSON, the probabilities and the batch's columns (scored). orjson writes each float's
        shortest exact text (what repr writes, read back to the same bits), and a whole batch in one call of
        compiled code."""
        scored, columns = self.scored(customers)
        answers = list(map(self.prediction, customers, scored))
        return orjson.dumps(answers if many else answers[0]), scored, columns

    def explanations(self, customers: list[dict], many: bool) -> tuple[bytes, list[float], dict | None]:
        """Each answer is the prediction's members, then the explanation's."""
        scored, columns = self.scored(customers)
        answers = list(map(self.prediction, customers, scored))
        if len(customers) > 1:
            return self.explainer.answers_json(customers, answers), scored, columns
        answers[0].update(self.explainer.explain_one(customers[0]))
        return orjson.dumps(answers if many else answers[0]), scored, columns

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
            "drift": {"counted": True, "reference": self.model.reference}
            if self.drift
            else {"counted": False, "reason": self.drift_problem},
        }
