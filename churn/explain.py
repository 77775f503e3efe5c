"""Why a customer is at risk: exact SHAP values of the folded logistic regression, each feature's share of the log-odds.

For a linear model with independent features (shap.LinearExplainer's interventional definition), a feature's SHAP
value is its term of the log-odds minus that term's mean over the background data, here the training split the
model is fitted on: w·(x − mean) for a number; for a category, the weight of the customer's category minus the
feature's mean weight (each category's weight times its share of the training split). The values add up exactly:
log-odds = base_log_odds + Σ contributions, where base_log_odds is the intercept plus every term's mean.

train.py writes the training split's column means beside the model (explanation_stats); the service builds an
Explainer from them with make_explainer. Like churn.scoring, nothing here imports scikit-learn or pandas.
"""

import json
import math
from itertools import repeat
from operator import itemgetter

import numpy as np

from churn.data import clean_text
from churn.schema import FEATURES
from churn.scoring import LinearScorer, ServedModel, metrics_path

MAX_REASONS = 3
JSON_REASONS = '},"reasons":['  # between an answer's contributions and its reasons
to_json = json.JSONEncoder(separators=(",", ":")).encode  # built once: json.dumps with options builds one per call

# What a category means to a marketer, by the dataset's spelling: "<phrase> raises the churn risk".
YES_NO_PHRASES = {
    "partner": ("Having a partner", "Having no partner"),
    "dependents": ("Having dependents", "Having no dependents"),
    "phoneservice": ("Having phone service", "Having no phone service"),
    "paperlessbilling": ("Paperless billing", "Paper billing"),
}
ADDONS = {
    "onlinesecurity": "online security",
    "onlinebackup": "online backup",
    "deviceprotection": "device protection",
    "techsupport": "tech support",
    "streamingtv": "streaming TV",
    "streamingmovies": "streaming movies",
}
CATEGORY_PHRASES = {
    "gender": {"Female": "Being female", "Male": "Being male"},
    **{name: {"Yes": yes, "No": no} for name, (yes, no) in YES_NO_PHRASES.items()},
    "multiplelines": {
        "No phone service": "Having no phone line",
        "No": "A single phone line",
        "Yes": "Having multiple lines",
    },
    "internetservice": {"DSL": "DSL internet", "Fiber optic": "Fiber optic internet", "No": "Having no internet"},
    **{
        name: {
            "Yes": f"Having {addon}",
            "No": f"No {addon}",
            "No internet service": f"No {addon} (no internet service)",
        }
        for name, addon in ADDONS.items()
    },
    "contract": {
        "Month-to-month": "A month-to-month contract",
        "One year": "A one-year contract",
        "Two year": "A two-year contract",
    },
    "paymentmethod": {
        "Electronic check": "Paying by electronic check",
        "Mailed check": "Paying by mailed check",
        "Bank transfer (automatic)": "Paying by automatic bank transfer",
        "Credit card (automatic)": "Paying by automatic credit card",
    },
}


def _months(x) -> str:
    return f"{x:g} month" if x == 1 else f"{x:g} months"


RAISES = " raises the churn risk"
# A number's sentence depends on which side of the training split's mean the customer is: (above, below).
NUMBER_PHRASES = {
    "seniorcitizen": (lambda x: "Being a senior citizen" + RAISES, lambda x: "Not being a senior citizen" + RAISES),
    "tenure": (
        lambda x: f"A long tenure ({_months(x)}){RAISES}",
        lambda x: f"A short tenure ({_months(x)}){RAISES}",
    ),
    "monthlycharges": (
        lambda x: f"High monthly charges (${x:,.2f}) raise the churn risk",
        lambda x: f"Low monthly charges (${x:,.2f}) raise the churn risk",
    ),
    "totalcharges": (
        lambda x: f"High total charges (${x:,.2f}) raise the churn risk",
        lambda x: f"Low total charges (${x:,.2f}) raise the churn risk",
    ),
}


class ExplanationUnavailable(Exception):
    """The model's file has no (usable) explanation statistics; the message names the file and how to make them."""


def explanation_stats(dv, X) -> dict:
    """What explanations need of the training split X (dv's encoding of it): the mean of every column of dv.

    The mean of a category's one-hot column is its share of the training split. Nested by the model's names.
    """
    column_means = dict(zip(dv.feature_names_, np.asarray(X, dtype=float).mean(axis=0).tolist(), strict=True))
    means = {
        f.name: {v: column_means[f"{f.name}{dv.separator}{v}"] for v in f.clean_values}
        if f.categorical
        else column_means[f.name]
        for f in FEATURES
    }
    return {"background": "the training split the model is fitted on", "rows": len(X), "means": means}


def global_explanation(scorer: LinearScorer) -> dict:
    """The model as a whole: log-odds = intercept + the weight of each category the customer has + Σ weight · number."""
    categories = dict(scorer.categorical)
    numbers = dict(scorer.numeric)
    weights = {
        f.name: {v: categories[f.name][v] for v in f.clean_values} if f.categorical else numbers[f.name]
        for f in FEATURES
    }
    return {"intercept": scorer.intercept, "weights": weights}


def _check_stats(stats) -> dict:
    """The means, if stats has a finite number for every feature and category of the schema; else
    ExplanationUnavailable (a hand-edited or foreign file must not stop the service, which still predicts)."""
    means = stats.get("means") if isinstance(stats, dict) else None
    expected = {f.name: set(f.clean_values) if f.categorical else None for f in FEATURES}
    actual = {
        name: set(value) if isinstance(value, dict) else None
        for name, value in (means.items() if isinstance(means, dict) else ())
    }
    if actual != expected:
        raise ExplanationUnavailable("has explanation statistics that do not match the model's features")
    numbers = [x for value in means.values() for x in (value.values() if isinstance(value, dict) else [value])]
    if not all(x.__class__ in (int, float) and math.isfinite(x) for x in numbers):
        raise ExplanationUnavailable("has explanation statistics that are not all finite numbers")
    return means


class Explainer:
    """Each customer's log-odds split into one contribution per feature, and the top reasons toward churn.

    Customers are dicts keyed by the model's feature names, with a category in any accepted spelling and numbers
    as int or float: what churn.schema's cleaning gives, and what LinearScorer scores. explain() answers dicts;
    explain_json() the same as JSON text, for the service.
    """

    def __init__(self, scorer: LinearScorer, stats: dict):
        means = _check_stats(stats)
        categories = dict(scorer.categorical)  # every accepted spelling -> its weight
        numbers = dict(scorer.numeric)
        base = scorer.intercept
        # Per feature, in the schema's order: (name, table, weight, mean). A feature with few values (a category,
        # in every accepted spelling, or a bounded integer) has a table {value: contribution}, computed once;
        # the others (the charges) are computed per customer. self.wording says how a reason reads:
        # {value: (value as the model spells it, sentence)} beside a table, else (above mean, below mean) phrases.
        self.terms = []
        self.wording = []
        for f in FEATURES:
            if f.categorical:
                spellings = categories[f.name]
                mean_weight = sum(spellings[v] * means[f.name][v] for v in f.clean_values)
                base += mean_weight
                self.terms.append((f.name, {s: w - mean_weight for s, w in spellings.items()}, 0.0, 0.0))
                sentences = {clean_text(v): CATEGORY_PHRASES[f.name][v] + RAISES for v in f.values}
                self.wording.append({s: (clean_text(s), sentences[clean_text(s)]) for s in spellings})
                continue
            weight, mean = numbers[f.name], means[f.name]
            base += weight * mean
            above, below = NUMBER_PHRASES[f.name]
            if f.integer:
                values = range(int(f.minimum), int(f.maximum) + 1)
                self.terms.append((f.name, {x: weight * (x - mean) for x in values}, weight, mean))
                self.wording.append({x: (x, (above if x > mean else below)(x)) for x in values})
            else:
                self.terms.append((f.name, None, weight, mean))
                self.wording.append((above, below))
        self.base_log_odds = base
        self.names = [name for name, *_ in self.terms]
        # JSON text written once, as writing floats is most of the cost of an answer: what every answer shares,
        # and for a tabled feature, its member of "contributions" and its reason for each of its values.
        self.json_head = f'"base_log_odds":{base!r},"contributions":{{'
        self.json_members = []  # (the member's leading text, {value: the whole member} or None)
        self.json_reasons = []  # {value: the reason as text}, or a number's reason's leading text
        for j, (name, table, *_) in enumerate(self.terms):
            prefix = f'{"," if j else ""}"{name}":'
            if table is None:
                self.json_members.append((prefix, None))
                self.json_reasons.append(f'{{"feature":"{name}","value":')
            else:
                self.json_members.append((prefix, {x: f"{prefix}{c!r}" for x, c in table.items()}))
                self.json_reasons.append({x: to_json(self.reason(j, x, c)) for x, c in table.items()})

    def contributions(self, customers: list[dict]) -> tuple[list[list[float]], list[list[int]]]:
        """Each customer's contributions in the schema's order, and the indices of the largest MAX_REASONS.

        One customer is computed in plain Python, many a feature at a time with numpy: the same to the bit
        (the same float operations), and ties keep the schema's order in both (stable sorts).
        """
        if len(customers) == 1:
            customer = customers[0]
            row = [
                table[customer[name]] if table is not None else weight * (customer[name] - mean)
                for name, table, weight, mean in self.terms
            ]
            # reverse=True keeps the order of equal items, as the stable argsort does
            return [row], [sorted(range(len(row)), key=row.__getitem__, reverse=True)[:MAX_REASONS]]
        matrix = self.matrix([list(map(itemgetter(name), customers)) for name in self.names])
        return matrix.tolist(), self.top(matrix).tolist()

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

    @staticmethod
    def top(matrix: np.ndarray) -> np.ndarray:
        return np.argsort(-matrix, axis=1, kind="stable")[:, :MAX_REASONS]

    def reason(self, j: int, value, contribution: float) -> dict:
        """Feature j's push toward churn: {"feature", "value" (the model's spelling), "contribution", "text"}."""
        wording = self.wording[j]
        if wording.__class__ is dict:
            value, text = wording[value]
        else:
            text = self.number_sentence(j, value)
        return {"feature": self.names[j], "value": value, "contribution": contribution, "text": text}

    def number_sentence(self, j: int, value) -> str:
        above, below = self.wording[j]
        return (above if value > self.terms[j][3] else below)(value)

    def reason_json(self, j: int, value, contribution: float) -> str:
        """reason() as JSON text."""
        cached = self.json_reasons[j]
        if cached.__class__ is dict:
            return cached[value]
        # Our own sentence, of letters, digits, $ , . ( ): nothing JSON would escape (a test checks every one).
        return f'{cached}{value!r},"contribution":{contribution!r},"text":"{self.number_sentence(j, value)}"}}'

    def explain(self, customers: list[dict]) -> list[dict]:
        """For each customer: {"base_log_odds", "contributions": {feature: log-odds, all of them}, "reasons": the
        features pushing toward churn (positive contributions), largest first, at most MAX_REASONS}."""
        rows, tops = self.contributions(customers)
        names, base = self.names, self.base_log_odds
        return [
            {
                "base_log_odds": base,
                "contributions": dict(zip(names, row, strict=True)),
                "reasons": [self.reason(j, customer[names[j]], row[j]) for j in top if row[j] > 0],
            }
            for customer, row, top in zip(customers, rows, tops, strict=True)
        ]

    def explain_one(self, customer: dict) -> dict:
        return self.explain([customer])[0]

    def explain_json(self, customers: list[dict], leading: list[str] | None = None) -> list[str]:
        """explain() as JSON text: each customer's answer as an object, after the members leading[i] (the
        caller's own, as JSON text without braces, e.g. the prediction). Floats keep every bit (repr, as json.dumps
        writes them).

        Many customers are written a feature at a time, so that most of the work runs in C: a tabled feature's
        texts are looked up, a charge's contributions are written by one repr() of their list, and a charge's
        reason is written only for the customers it is a reason for.
        """
        starts = ["{" + text + "," for text in leading] if leading else ["{"] * len(customers)
        if len(customers) <= 1:
            return list(map(self.one_json, customers, starts))
        n = len(customers)
        columns = [list(map(itemgetter(name), customers)) for name in self.names]
        matrix = self.matrix(columns)
        order = self.top(matrix)
        positive = np.take_along_axis(matrix, order, axis=1) > 0
        members = []
        reasons = np.full((len(self.terms), n), "", dtype=object)
        for j, ((prefix, texts), values) in enumerate(zip(self.json_members, columns, strict=True)):
            if texts is not None:
                members.append(map(texts.__getitem__, values))
                reasons[j] = list(map(self.json_reasons[j].__getitem__, values))
                continue
            contributions = matrix[:, j].tolist()
            members += [repeat(prefix), repr(contributions)[1:-1].split(", ")]
            rows = np.flatnonzero(((order == j) & positive).any(axis=1)).tolist()
            reasons[j, rows] = [self.reason_json(j, values[i], contributions[i]) for i in rows]
        picked = reasons[order.T, np.arange(n)]  # MAX_REASONS x customers, largest first
        joined = np.where(positive[:, 0], picked[0], "")
        for k in range(1, MAX_REASONS):
            joined = joined + np.where(positive[:, k], "," + picked[k], "")
        tail = joined.tolist()
        pieces = zip(starts, repeat(self.json_head), *members, repeat(JSON_REASONS), tail, repeat("]}"))
        return list(map("".join, pieces))

    def one_json(self, customer: dict, start: str = "{") -> str:
        [row], [top] = self.contributions([customer])
        members = [
            prefix + repr(row[j]) if texts is None else texts[customer[self.names[j]]]
            for j, (prefix, texts) in enumerate(self.json_members)
        ]
        reasons = [self.reason_json(j, customer[self.names[j]], row[j]) for j in top if row[j] > 0]
        return f"{start}{self.json_head}{''.join(members)}{JSON_REASONS}{','.join(reasons)}]}}"


def make_explainer(model: ServedModel) -> Explainer:
    """The model's Explainer, or ExplanationUnavailable naming the file that lacks the statistics and the fix."""
    path = metrics_path(model.path)
    if model.explanation is None:
        problem = "is missing" if model.training is None else "has no explanation statistics (it predates them)"
    else:
        try:
            return Explainer(model.scorer, model.explanation)
        except ExplanationUnavailable as e:
            problem = str(e)
    raise ExplanationUnavailable(
        f"Explanations are not available: {path.name}, written by train.py beside {model.path.name}, {problem}. "
        "Retrain with `python train.py` (make train) to write it."
    )
