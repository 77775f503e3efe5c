"""The model as the service serves it, with no web framework in it: load, check, warm up, predict, explain, the card.

A Predictor owns one customer endpoint per operation (churn.serve.endpoint: from a request's body to its answer's
bytes); the web layer only routes requests to them. The warm-up sends the course's sample customer through those
same endpoints before any request, so a model that loads but cannot answer is found at start, not by a client.
A shadow challenger (churn.monitor.challenger), when configured, rides along on both endpoints.
"""

import orjson

from churn import errors
from churn.errors import ServiceError
from churn.model.explain import ExplanationUnavailable, global_explanation, make_explainer
from churn.model.schema import FEATURES, ID_COLUMN, SAMPLE_CUSTOMER
from churn.model.scoring import ServedModel, columns_of, load_served_model
from churn.monitor.challenger import Challenger, load_challenger
from churn.monitor.drift import SCORE
from churn.monitor.ids import uuid7s
from churn.monitor.live import DriftCounts
from churn.monitor.predictionlog import PredictionLog
from churn.serve.endpoint import CustomerEndpoint
from churn.settings import Settings

SAMPLE_BODY = orjson.dumps(SAMPLE_CUSTOMER)


def prediction_log(settings: Settings, model: ServedModel) -> PredictionLog | None:
    if settings.prediction_log is None:
        return None
    return PredictionLog(settings.prediction_log, model.version, settings.threshold, settings.prediction_log_queue)


# What an endpoint's answer function gives: the body; the probabilities, the prediction ids, the challenger's
# probabilities and a batch's columns (Predictor.scored), which the monitoring reads.
Answered = tuple[bytes, list[float], list[str], list[float] | None, dict | None]


class Predictor:
    def __init__(self, model: ServedModel, settings: Settings, challenger: Challenger | None = None):
        self.model = model
        self.settings = settings
        self.scorer = model.scorer
        self.challenger = challenger
        # What /health/ready's detail reports while the model serves: a challenger left out, a reload refused.
        self.problems: list[str] = []
        self.threshold = settings.threshold
        self.max_customers = settings.max_customers
        limits = settings.max_customers, settings.max_body_bytes
        self.endpoints = {
            "predict": CustomerEndpoint(self.predictions, *limits),
            "explain": CustomerEndpoint(self.explanations, *limits),
        }
        self.prediction_log = prediction_log(settings, model)
        # Counting customers in the reference's bins (churn.monitor.live); off for a model without a reference.
        self.drift, self.drift_problem = DriftCounts.of(model.reference)
        for name, endpoint in self.endpoints.items():
            endpoint.name, endpoint.prediction_log, endpoint.drift = name, self.prediction_log, self.drift
        try:
            self.explainer = make_explainer(model)
        except ExplanationUnavailable as e:  # /predict still serves; /explain says what to do
            self.explainer = None
            self.endpoints["explain"].unavailable = ServiceError(404, str(e))
        self.ready = self.warm_up()
        for endpoint in self.endpoints.values():
            endpoint.challenger = challenger

    @classmethod
    def load(cls, settings: Settings, model: ServedModel | None = None) -> "Predictor":
        """The model (settings.model_file's unless given) with the challenger settings name, if it loads."""
        model = model or load_served_model(settings.model_file)
        challenger, problem = load_challenger(settings.challenger_model_file, settings.threshold)
        predictor = cls(model, settings, challenger)
        predictor.problems += [problem] if problem else []
        return predictor

    def served_models(self) -> dict[str, ServedModel | None]:
        return {"champion": self.model, "challenger": self.challenger and self.challenger.model}

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

    def scored(self, customers: list[dict]) -> tuple[list[float], list[float] | None, dict | None]:
        """The model's probabilities of the customers; the challenger's (None without one); for a batch, its columns
        as the scorers read them, with the probabilities as an array under SCORE (what the drift counts read,
        churn.monitor.live), None for one customer. A batch is read into columns once for all of them."""
        scorer, challenger = self.scorer, self.challenger and self.challenger.scorer
        if len(customers) == 1:
            return [scorer.score_one(customers[0])], challenger and [challenger.score_one(customers[0])], None
        columns = columns_of(customers)
        probabilities = scorer.score_columns(columns)
        shadow = challenger and challenger.score_columns(columns).tolist()
        return probabilities.tolist(), shadow, columns | {SCORE: probabilities}

    def prediction(self, customer: dict, probability: float, prediction_id: str) -> dict:
        # The id, when sent, leads so that a batch answer can be matched to its customers.
        answer = {ID_COLUMN: customer[ID_COLUMN]} if ID_COLUMN in customer else {}
        answer["prediction_id"] = prediction_id
        answer["churn_probability"] = probability
        answer["churn"] = probability >= self.threshold
        return answer

    def predictions(self, customers: list[dict], many: bool) -> Answered:
        """The answer's JSON, then what the monitoring reads (Answered). orjson writes each float's shortest exact
        text (what repr writes, read back to the same bits), and a whole batch in one call of compiled code."""
        (scored, shadow, columns), ids = self.scored(customers), uuid7s(len(customers))
        answers = list(map(self.prediction, customers, scored, ids))
        return orjson.dumps(answers if many else answers[0]), scored, ids, shadow, columns

    def explanations(self, customers: list[dict], many: bool) -> Answered:
        """Each answer is the prediction's members, then the explanation's."""
        (scored, shadow, columns), ids = self.scored(customers), uuid7s(len(customers))
        answers = list(map(self.prediction, customers, scored, ids))
        if len(customers) > 1:
            return self.explainer.answers_json(customers, answers), scored, ids, shadow, columns
        answers[0].update(self.explainer.explain_one(customers[0]))
        return orjson.dumps(answers if many else answers[0]), scored, ids, shadow, columns

    def card(self) -> dict:
        model = self.model
        challenger = self.challenger and self.challenger.model
        return {
            "model_file": model.path.name,
            "version": model.version,
            "sha256": model.sha256,
            "sklearn_version": model.sklearn_version,
            "scorer": type(self.scorer).__name__,
            "threshold": self.threshold,
            "features": {f.name: {"description": f.description, **f.constraints()} for f in FEATURES},
            "training": model.training,
            "explanation": global_explanation(self.scorer),
            "challenger": challenger and {"model_file": challenger.path.name, "version": challenger.version},
            "drift": {"counted": True, "reference": self.model.reference}
            if self.drift
            else {"counted": False, "reason": self.drift_problem},
        }
