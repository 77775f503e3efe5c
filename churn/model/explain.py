"""Why a customer is at risk: exact SHAP values of the folded logistic regression, each feature's share of the log-odds.

For a linear model with independent features (shap.LinearExplainer's interventional definition), a feature's SHAP
value is its term of the log-odds minus that term's mean over the background data, here the training split the
model is fitted on: w·(x − mean) for a number; for a category, the weight of the customer's category minus the
feature's mean weight (each category's weight times its share of the training split). The values add up exactly:
log-odds = base_log_odds + Σ contributions, where base_log_odds is the intercept plus every term's mean.

train.py writes the training split's column means beside the model (explanation_stats); the service builds an
Explainer from them with make_explainer. Like churn.model.scoring, nothing here imports scikit-learn or pandas.
"""

import math
from operator import itemgetter

import numpy as np
import orjson

from churn.model.data import clean_text
from churn.model.modelfile import sidecar_path
from churn.model.schema import FEATURES
from churn.model.scoring import LinearScorer, ServedModel

MAX_REASONS = 3


class ExplanationUnavailable(Exception):
    """The model's file has no (usable) explanation statistics; the message names the file and how to make them."""


def global_explanation(scorer: LinearScorer) -> dict:
    """The model as a whole: log-odds = intercept + the weight of each category the customer has + Σ weight · number."""
    categories = dict(scorer.categorical)
    numbers = dict(scorer.numeric)
    weights = {
        f.name: {v: categories[f.name][v] for v in f.clean_values} if f.categorical else numbers[f.name]
        for f in FEATURES
    }
    return {"intercept": scorer.intercept, "weights": weights}


SHARE_TOLERANCE = 1e-9  # category shares are means of 0/1 columns: they add up to 1 but for rounding


def _check_stats(stats) -> dict:
    """The means, if stats holds, for every feature and category of the schema, a value the training split could
    have: a number's mean within the schema's range, a category's shares in [0, 1] adding up to 1; else
    ExplanationUnavailable saying what is wrong (a hand-edited or foreign file must not stop the service, which
    still predicts, nor make /explain answer wrong numbers)."""
    means = stats.get("means") if isinstance(stats, dict) else None
    expected = {f.name: set(f.clean_values) if f.categorical else None for f in FEATURES}
    actual = {
        name: set(value) if isinstance(value, dict) else None
        for name, value in (means.items() if isinstance(means, dict) else ())
    }
    if actual != expected:
        raise ExplanationUnavailable("has explanation statistics that do not match the model's features")
    for f in FEATURES:
        values = list(means[f.name].values()) if f.categorical else [means[f.name]]
        if not all(x.__class__ in (int, float) and math.isfinite(x) for x in values):
            raise ExplanationUnavailable(f"has a {f.name} statistic that is not a finite number")
        if f.categorical and not (all(0 <= x <= 1 for x in values) and abs(math.fsum(values) - 1) <= SHARE_TOLERANCE):
            raise ExplanationUnavailable(f"has {f.name} shares {values}, not shares in [0, 1] adding up to 1")
        if not f.categorical and not f.minimum <= values[0] <= f.maximum:
            raise ExplanationUnavailable(
                f"has a {f.name} mean of {values[0]:g}, outside the schema's range ({f.range})"
            )
    return means


class Explainer:
    """Each customer's log-odds split into one contribution per feature, and the top reasons toward churn.

    Customers are dicts keyed by the model's feature names, with a category in any accepted spelling and numbers
    as int or float: what churn.model.schema's cleaning gives, and what LinearScorer scores.
    """

    def __init__(self, scorer: LinearScorer, stats: dict):
        means = _check_stats(stats)
        categories = dict(scorer.categorical)  # every accepted spelling -> its weight
        numbers = dict(scorer.numeric)
        base = scorer.intercept
        # Per feature, in the schema's order: (name, table, weight, mean). A feature with few values (a category,
        # in every accepted spelling, or a bounded integer) has a table {value: contribution}, computed once, and
        # its reasons are made once too (self.reasons[j]: {value: reason}); the others (the charges) are computed
        # per customer.
        self.terms = []
        self.reasons = []
        for f in FEATURES:
            if f.categorical:
                spellings = categories[f.name]
                mean_weight = sum(spellings[v] * means[f.name][v] for v in f.clean_values)
                base += mean_weight
                table = {s: w - mean_weight for s, w in spellings.items()}
                self.terms.append((f.name, table, 0.0, 0.0))
                sentences = {clean_text(v): sentence for v, sentence in f.phrases.items()}
                self.reasons.append(
                    {s: reason(f.name, clean_text(s), c, sentences[clean_text(s)]) for s, c in table.items()}
                )
                continue
            weight, mean = numbers[f.name], means[f.name]
            base += weight * mean
            if f.integer:
                table = {x: weight * (x - mean) for x in range(int(f.minimum), int(f.maximum) + 1)}
                self.terms.append((f.name, table, weight, mean))
                self.reasons.append({x: reason(f.name, x, c, self.sentence(f, mean, x)) for x, c in table.items()})
            else:
                self.terms.append((f.name, None, weight, mean))
                self.reasons.append(None)
        self.base_log_odds = base
        self.names = [name for name, *_ in self.terms]
        # For answers_json: each tabled reason as JSON, and an answer's text around its numbers and reasons.
        self.reasons_json = [
            None if made is None else {value: orjson.dumps(r) for value, r in made.items()} for made in self.reasons
        ]
        members = ",".join(f'"{name}":%s' for name in self.names)
        base_json = orjson.dumps(base).decode()
        self.answer_template = f'%s,"base_log_odds":{base_json},"contributions":{{{members}}},"reasons":[%s]}}'.encode()

    @staticmethod
    def sentence(feature, mean: float, value) -> str:
        above, below = feature.phrases
        return (above if value > mean else below)(value)

    def matrix(self, columns: list[list]) -> np.ndarray:
        """The contributions of customers given as one column of values per feature: customers x features."""
        n = len(columns[0])
        contributions = np.empty((n, len(self.terms)))
        for j, ((_, table, weight, mean), values) in enumerate(zip(self.terms, columns, strict=True)):
            if table is not None:
                contributions[:, j] = np.fromiter(map(table.__getitem__, values), float, n)
            else:
                contributions[:, j] = weight * (np.fromiter(values, float, n) - mean)
        return contributions

    def reason(self, j: int, value, contribution: float) -> dict:
        """Feature j's push toward churn: {"feature", "value" (the model's spelling), "contribution", "text"}."""
        made = self.reasons[j]
        if made is not None:
            return made[value]
        feature = FEATURES[j]
        return reason(feature.name, value, contribution, self.sentence(feature, self.terms[j][3], value))

    def explain(self, customers: list[dict]) -> list[dict]:
        """For each customer: {"base_log_odds", "contributions": {feature: log-odds, all of them}, "reasons": the
        features pushing toward churn (positive contributions), largest first, at most MAX_REASONS}.

        One customer is computed in plain Python, many a feature at a time with numpy: the same to the bit (the same
        float operations), and ties keep the schema's order in both (stable sorts).
        """
        if len(customers) == 1:
            return [self.explain_one(customers[0])]
        matrix, tops, shown_by_customer, reasons = self.batch(customers, self.reasons, None)
        names, base = self.names, self.base_log_odds
        return [
            {
                "base_log_odds": base,
                "contributions": dict(zip(names, row, strict=True)),
                "reasons": [reasons[j][i] for j, ok in zip(top, shown, strict=True) if ok],
            }
            for i, (row, top, shown) in enumerate(zip(matrix.tolist(), tops, shown_by_customer, strict=True))
        ]

    def answers_json(self, customers: list[dict], predictions: list[dict]) -> bytes:
        """explain(), each merged after its customer's prediction, as the JSON array of an answer, for a batch.

        Written without a dict per customer, which would cost more than the explanation: orjson writes every
        contribution of the batch in one call from the numpy matrix (each float's shortest exact text) and each
        prediction, and each answer is those texts in a template, with its reasons (each made once, as JSON)."""
        matrix, tops, shown_by_customer, reasons = self.batch(customers, self.reasons_json, orjson.dumps)
        contributions = orjson.dumps(matrix, option=orjson.OPT_SERIALIZE_NUMPY)[2:-2].split(b"],[")
        template = self.answer_template
        heads = map(orjson.dumps, predictions)
        rows = zip(heads, contributions, tops, shown_by_customer, strict=True)
        answers = [
            template % (head[:-1], *row.split(b","), b",".join([reasons[j][i] for j, ok in zip(top, shown) if ok]))  # noqa: B905 (MAX_REASONS each)
            for i, (head, row, top, shown) in enumerate(rows)
        ]
        return b"[" + b",".join(answers) + b"]"

    def batch(self, customers: list[dict], made_by_feature: list, encode) -> tuple:
        """For many customers: their contributions (customers x features), each one's MAX_REASONS largest features
        and whether each is a reason (positive), and each feature's reason for every customer (made, looked up in
        C) or for those it is a reason for (made now, encoded with encode when given)."""
        columns = [list(map(itemgetter(name), customers)) for name in self.names]
        matrix = self.matrix(columns)
        order = np.argsort(-matrix, axis=1, kind="stable")[:, :MAX_REASONS]
        positive = np.take_along_axis(matrix, order, axis=1) > 0
        reasons = []
        for j, made in enumerate(made_by_feature):
            if made is not None:
                reasons.append(list(map(made.__getitem__, columns[j])))
                continue
            rows = np.flatnonzero(((order == j) & positive).any(axis=1)).tolist()
            given = (self.reason(j, columns[j][i], c) for i, c in zip(rows, matrix[rows, j].tolist(), strict=True))
            reasons.append(dict(zip(rows, map(encode, given) if encode else given, strict=True)))
        return matrix, order.tolist(), positive.tolist(), reasons

    def explain_one(self, customer: dict) -> dict:
        row = [
            table[customer[name]] if table is not None else weight * (customer[name] - mean)
            for name, table, weight, mean in self.terms
        ]
        # reverse=True keeps the order of equal items, as the stable argsort does
        top = sorted(range(len(row)), key=row.__getitem__, reverse=True)[:MAX_REASONS]
        return {
            "base_log_odds": self.base_log_odds,
            "contributions": dict(zip(self.names, row, strict=True)),
            "reasons": [self.reason(j, customer[self.names[j]], row[j]) for j in top if row[j] > 0],
        }


def reason(feature: str, value, contribution: float, text: str) -> dict:
    return {"feature": feature, "value": value, "contribution": contribution, "text": text}


def make_explainer(model: ServedModel) -> Explainer:
    """The model's Explainer, or ExplanationUnavailable naming the file that lacks the statistics and the fix."""
    path = sidecar_path(model.path)
    if model.sidecar_problem:
        problem = model.sidecar_problem
    elif model.explanation is None:
        problem = "has no explanation statistics (it predates them)"
    else:
        try:
            return Explainer(model.scorer, model.explanation)
        except ExplanationUnavailable as e:
            problem = str(e)
    raise ExplanationUnavailable(
        f"Explanations are not available: {path}, written by train.py beside {model.path.name}, {problem}. "
        "Retrain with `python train.py` (make train) to write it."
    )
