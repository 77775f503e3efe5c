"""Safe loading and fast scoring of the pickled (dv, model) pair at serving time.

Nothing here imports scikit-learn or pandas, and the service's image does not install them: the pickle is read
into stand-in objects that keep the estimators' fitted state, which is all a folded logistic regression needs.
"""

import io
import json
import math
import pickle
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from operator import itemgetter
from pathlib import Path

import numpy as np

from churn.data import clean_text, file_sha256
from churn.schema import FEATURES

EXPLANATION_KEY = "explanation"  # the metrics file's entry for churn.explain's statistics
ESTIMATORS = {
    ("sklearn.feature_extraction._dict_vectorizer", "DictVectorizer"),
    ("sklearn.linear_model._logistic", "LogisticRegression"),
}
# The pickle may come from anywhere: only the globals a fitted pair needs are admitted.
ALLOWED_GLOBALS = ESTIMATORS | {
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy", "float64"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
}


# Where scikit-learn is not installed (the service's image), models must come from the version the lock pins.
LOCK_FILE = Path(__file__).resolve().parent.parent / "Pipfile.lock"


class ModelLoadError(Exception):
    """The model file cannot be served; the message names the file and what to do."""


def required_sklearn_version(lock_file: Path | None = None) -> str:
    """The scikit-learn a model must be pickled with: the installed one, else the one lock_file pins for training.

    The stand-ins read the estimators' state as that version lays it out, so another version is refused.
    """
    try:
        return version("scikit-learn")
    except PackageNotFoundError:
        pass
    lock_file = lock_file or LOCK_FILE
    try:
        pinned = json.loads(Path(lock_file).read_text())["develop"]["scikit-learn"]["version"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(
            f"scikit-learn is not installed and {lock_file} does not say which version trains the models ({e!r})"
        ) from None
    return pinned.removeprefix("==")


class PickledEstimator:
    """A scikit-learn estimator's fitted state (coef_, vocabulary_, ...) as attributes, without scikit-learn."""

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


STAND_INS = {key: type(key[1], (PickledEstimator,), {}) for key in ESTIMATORS}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, stand_ins: bool):
        super().__init__(file)
        self.stand_ins = stand_ins

    def find_class(self, module, name):
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        if self.stand_ins and (module, name) in ESTIMATORS:
            return STAND_INS[module, name]
        return super().find_class(module, name)


def unpickle_pair(path: Path, stand_ins: bool = True) -> tuple:
    """Read (dv, model) from path, admitting only ALLOWED_GLOBALS, so no code the file carries runs.

    With stand_ins, the estimators come back as PickledEstimator objects and are checked against
    required_sklearn_version(); without, as real scikit-learn objects.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelLoadError(f"cannot read model file {path}: {e.strerror}") from None
    if not data:
        raise ModelLoadError(f"model file {path} is empty: run train.py to make one")
    try:
        pair = _RestrictedUnpickler(io.BytesIO(data), stand_ins).load()
    except pickle.UnpicklingError as e:
        raise ModelLoadError(f"model file {path}: {e}") from None
    except Exception as e:  # a damaged file fails anywhere in pickle or numpy, with any exception
        raise ModelLoadError(f"model file {path} is truncated or not a model pickle ({e!r})") from None
    names = tuple(type(part).__name__ for part in pair) if isinstance(pair, tuple) else ()
    if names != ("DictVectorizer", "LogisticRegression"):
        raise ModelLoadError(f"model file {path} does not hold a (DictVectorizer, LogisticRegression) pair")
    if stand_ins:
        required = required_sklearn_version()
        for part in pair:
            pickled = part.__dict__.get("_sklearn_version", "unknown")
            if pickled != required:
                raise ModelLoadError(
                    f"model file {path} was pickled with scikit-learn {pickled}, and this installation takes models "
                    f"from scikit-learn {required}: retrain it with `python train.py` (make train)"
                )
    return pair


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
        n = len(customers)
        columns = {field: (None, list(map(itemgetter(field), customers))) for field, _ in self.categorical}
        columns |= {field: np.fromiter(map(itemgetter(field), customers), float, n) for field, _ in self.numeric}
        return self.score_columns(columns).tolist()

    def score_columns(self, columns: dict) -> np.ndarray:
        """The probabilities of n customers given feature by feature, as churn.batch reads them.

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


def make_scorer(dv, model) -> LinearScorer:
    check_vocabulary(dv)
    check_foldable(dv, model)
    return LinearScorer(dv, model)


def metrics_path(model_path: Path) -> Path:
    """Where train.py writes a model's metrics and explanation statistics: beside it, as <model file>.json."""
    return model_path.with_name(model_path.name + ".json")


@dataclass(frozen=True)
class ServedModel:
    """What the service needs of a model file: its scorer and the facts its model card reports."""

    path: Path
    sha256: str
    sklearn_version: str  # the version that pickled it (loading refuses any other)
    scorer: LinearScorer
    training: dict | None  # the metrics train.py wrote beside the model, when present
    explanation: dict | None  # the statistics churn.explain needs (train.py writes them with the metrics)


def load_served_model(path: Path) -> ServedModel:
    path = Path(path)
    dv, model = unpickle_pair(path)
    sklearn_version = model._sklearn_version
    try:
        scorer = make_scorer(dv, model)
    except ModelLoadError as e:
        raise ModelLoadError(f"model file {path}: {e}") from None
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as e:
        # An unfitted or damaged pair lacks the attributes, or the shapes, a fitted one has.
        raise ModelLoadError(f"model file {path} does not hold a fitted pair ({e!r})") from None
    metrics_file = metrics_path(path)
    training = json.loads(metrics_file.read_text()) if metrics_file.exists() else None
    explanation = training.pop(EXPLANATION_KEY, None) if training else None
    return ServedModel(path, file_sha256(path), sklearn_version, scorer, training, explanation)
