"""Fast scoring of the pickled (dv, model) pair at serving time: the pair folded into one weight per category and
per number.

Nothing here imports scikit-learn or pandas, and the service's image does not install them: churn.model.modelfile reads
the pickle into stand-in objects that keep the estimators' fitted state, which is all a folded logistic regression
needs.
"""

import math
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

import numpy as np

from churn.model.data import clean_text, file_sha256
from churn.model.modelfile import EXPLANATION_KEY, REFERENCE_KEY, ModelLoadError, read_sidecar, unpickle_pair
from churn.model.schema import FEATURES


def canonical_values() -> dict[str, dict[str, str]]:
    """For each categorical feature, every accepted spelling -> the model's spelling."""
    return {f.name: {spelling: clean_text(spelling) for spelling in f.accepted_values} for f in FEATURES if f.values}


def check_vocabulary(dv) -> None:
    """The schema must describe exactly what the model was trained on, or validation would lie."""
    expected = {f.name for f in FEATURES if not f.values}
    expected |= {f"{f.name}{dv.separator}{v}" for f in FEATURES for v in f.clean_values}
    actual = set(dv.feature_names_)
    if actual != expected:
        raise ModelLoadError(
            "the model's features differ from the schema: "
            f"unknown to the schema {sorted(actual - expected)}, unknown to the model {sorted(expected - actual)}"
        )


def sigmoid(z: float) -> float:
    # scikit-learn's expit is 1 / (1 + exp(-z)); math.exp overflows where expit reaches 0.
    return 0.0 if z < -709 else 1.0 / (1.0 + math.exp(-z))


def check_foldable(dv, model) -> None:
    """A fitted binary logistic regression over dv's features: its probability is a sigmoid of a weighted sum.

    Anything else that unpickles as the pair (more than two classes, unfitted, fitted on other columns) cannot
    answer a churn probability, so it is refused here rather than failing or answering nonsense per request.
    """
    classes, coef = getattr(model, "classes_", ()), getattr(model, "coef_", None)
    if len(classes) != 2 or coef is None or coef.shape != (1, len(dv.feature_names_)):
        shape = getattr(coef, "shape", None)
        raise ModelLoadError(
            f"the model is not a fitted binary LogisticRegression over the DictVectorizer's {len(dv.feature_names_)} "
            f"features (classes {list(classes)}, coefficients of shape {shape}): retrain it with `python train.py`"
        )


class LinearScorer:
    """A binary logistic regression folded at load time into one weight per category and per number.

    The probability is the sum scikit-learn computes (in another order), so it agrees with predict_proba to
    about 1e-16, at microseconds per customer instead of scikit-learn's per-call validation.
    """

    def __init__(self, dv, model):
        coef = dict(zip(dv.feature_names_, model.coef_[0].tolist(), strict=True))
        self.intercept = float(model.intercept_[0])
        self.categorical = [
            (field, {spelling: coef[f"{field}{dv.separator}{value}"] for spelling, value in spellings.items()})
            for field, spellings in canonical_values().items()
        ]
        self.numeric = [(f.name, coef[f.name]) for f in FEATURES if not f.values]

    def score_one(self, customer: dict) -> float:
        z = self.intercept
        for field, weights in self.categorical:
            z += weights[customer[field]]
        for field, weight in self.numeric:
            z += weight * customer[field]
        return sigmoid(z)

    def score_many(self, customers: list[dict]) -> list[float]:
        return self.score_columns(columns_of(customers)).tolist()

    def score_columns(self, columns: dict) -> np.ndarray:
        """The probabilities of n customers given feature by feature, as churn.batch.chunks reads them.

        columns[name] is an array of n numbers for a number; for a category, a pair (codes, spellings) meaning
        customer i has spellings[codes[i]], in any accepted spelling (Arrow's dictionary encoding: each distinct
        spelling is looked up once), or (None, spellings) with one spelling per customer.
        """
        z = np.full(len(columns[self.numeric[0][0]]), self.intercept)
        for field, weights in self.categorical:
            codes, spellings = columns[field]
            category_weights = np.fromiter(map(weights.__getitem__, spellings), float, len(spellings))
            z += category_weights if codes is None else category_weights[codes]
        for field, weight in self.numeric:
            z += weight * columns[field]
        with np.errstate(over="ignore"):  # exp overflows to inf where the probability is 0, as in expit
            return 1.0 / (1.0 + np.exp(-z))


# Every accepted spelling of each category, in a fixed order, and each spelling's place in it.
SPELLINGS = {field: tuple(spellings) for field, spellings in canonical_values().items()}
SPELLING_CODES = {field: {spelling: code for code, spelling in enumerate(s)} for field, s in SPELLINGS.items()}
NUMBERS = [f.name for f in FEATURES if not f.values]


def columns_of(customers: list[dict]) -> dict:
    """Cleaned customers (dicts by the model's names) as LinearScorer.score_columns reads them, each category as
    codes into SPELLINGS: the one pass over the customers, which any number of scorers (a challenger's too) share."""
    n = len(customers)
    columns = {
        field: (np.fromiter(map(codes.__getitem__, map(itemgetter(field), customers)), np.intp, n), SPELLINGS[field])
        for field, codes in SPELLING_CODES.items()
    }
    return columns | {field: np.fromiter(map(itemgetter(field), customers), float, n) for field in NUMBERS}


def make_scorer(dv, model) -> LinearScorer:
    check_vocabulary(dv)
    check_foldable(dv, model)
    return LinearScorer(dv, model)


@dataclass(frozen=True)
class ServedModel:
    """What the service needs of a model file: its scorer and the facts its model card reports."""

    path: Path
    sha256: str
    sklearn_version: str  # the version that pickled it (loading refuses any other)
    C: float  # the logistic regression's inverse regularization strength, what train.py's --C sets
    scorer: LinearScorer
    training: dict | None  # the metrics train.py wrote beside the model, when present and usable
    explanation: dict | None  # the statistics churn.model.explain needs (train.py writes them with the metrics)
    sidecar_problem: str | None = None  # what is wrong with the sidecar, when it cannot be used
    reference: dict | None = None  # the training split's profile drift is measured against (churn.monitor.drift)

    @property
    def version(self) -> str:
        """What names this model on every answer (X-Model-Version), in /model, the access log and the metrics:
        its C and the start of its file's sha256, e.g. C=1.0-3f2a9c01b7e4. Only hex, digits and C=.-+, so it
        goes into a header or a log line as it is."""
        return f"C={self.C!r}-{self.sha256[:12]}"


def load_served_model(path: Path) -> ServedModel:
    path = Path(path)
    dv, model = unpickle_pair(path)
    sklearn_version = model._sklearn_version
    try:
        scorer = make_scorer(dv, model)
        C = float(model.C)
    except ModelLoadError as e:
        raise ModelLoadError(f"model file {path}: {e}") from None
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as e:
        # An unfitted or damaged pair lacks the attributes, or the shapes, a fitted one has.
        raise ModelLoadError(f"model file {path} does not hold a fitted pair ({e!r})") from None
    training, problem = read_sidecar(path)
    explanation = training.pop(EXPLANATION_KEY, None) if training else None
    reference = training.pop(REFERENCE_KEY, None) if training else None
    return ServedModel(path, file_sha256(path), sklearn_version, C, scorer, training, explanation, problem, reference)
