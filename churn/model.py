"""Fit, save, safely load, and score the churn model: a DictVectorizer + LogisticRegression pair."""

import io
import json
import math
import pickle
import warnings
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

import numpy as np
from scipy.special import expit
from sklearn.exceptions import InconsistentVersionWarning
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold, train_test_split

from churn.data import TARGET, clean_text, file_sha256
from churn.schema import FEATURES

FEATURE_NAMES = [f.name for f in FEATURES]
RANDOM_STATE = 1


def new_classifier(C: float) -> LogisticRegression:
    # The course's lbfgs stops unconverged on these unscaled features even at max_iter=1000;
    # newton-cholesky reaches the same optimum in a handful of iterations.
    return LogisticRegression(C=C, solver="newton-cholesky", max_iter=1000)


def fit(df, C: float = 1.0):
    """Fit (dv, model) on a cleaned frame."""
    dv = DictVectorizer(sparse=False)
    X = dv.fit_transform(df[FEATURE_NAMES].to_dict(orient="records"))
    model = new_classifier(C).fit(X, df[TARGET].to_numpy())
    return dv, model


def predict(df, dv, model) -> np.ndarray:
    X = dv.transform(df[FEATURE_NAMES].to_dict(orient="records"))
    return model.predict_proba(X)[:, 1]


def split(df):
    """The course's 80/20 split: (full_train, test)."""
    return train_test_split(df, test_size=0.2, random_state=RANDOM_STATE)


def cross_validate(df, C: float = 1.0, n_splits: int = 5, on_fold=None) -> list[float]:
    """AUC of each of n_splits shuffled folds of df; on_fold(fold, auc) is called as each one finishes."""
    aucs = []
    folds = KFold(n_splits=n_splits, shuffle=True, random_state=RANDOM_STATE)
    for fold, (train_idx, val_idx) in enumerate(folds.split(df)):
        df_train, df_val = df.iloc[train_idx], df.iloc[val_idx]
        dv, model = fit(df_train, C)
        auc = roc_auc_score(df_val[TARGET], predict(df_val, dv, model))
        aucs.append(auc)
        if on_fold:
            on_fold(fold, auc)
    return aucs


def save_model(path: Path, dv, model) -> None:
    with open(path, "wb") as f_out:
        pickle.dump((dv, model), f_out)


# ---- Loading: the pickle may come from anywhere, so only the globals a fitted pair needs are admitted.

ALLOWED_GLOBALS = {
    ("sklearn.feature_extraction._dict_vectorizer", "DictVectorizer"),
    ("sklearn.linear_model._logistic", "LogisticRegression"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy", "float64"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
}


class ModelLoadError(Exception):
    """The model file cannot be served; the message names the file and what to do."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        return super().find_class(module, name)


def load_model(path: Path):
    """Read (dv, model) from path without running any code the file carries."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelLoadError(f"cannot read model file {path}: {e.strerror}") from None
    if not data:
        raise ModelLoadError(f"model file {path} is empty: run train.py to make one")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InconsistentVersionWarning)
        try:
            pair = _RestrictedUnpickler(io.BytesIO(data)).load()
        except pickle.UnpicklingError as e:
            raise ModelLoadError(f"model file {path}: {e}") from None
        except (EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError, KeyError) as e:
            raise ModelLoadError(f"model file {path} is truncated or not a model pickle ({e!r})") from None
    for w in caught:
        if issubclass(w.category, InconsistentVersionWarning):
            raise ModelLoadError(
                f"model file {path} was pickled with scikit-learn {w.message.original_sklearn_version}, "
                f"this is {w.message.current_sklearn_version}: retrain it with `python train.py` (make train)"
            )
    if not (
        isinstance(pair, tuple)
        and len(pair) == 2
        and isinstance(pair[0], DictVectorizer)
        and isinstance(pair[1], LogisticRegression)
    ):
        raise ModelLoadError(f"model file {path} does not hold a (DictVectorizer, LogisticRegression) pair")
    return pair


# ---- Scoring at serving time


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


class LinearScorer:
    """A binary linear model folded at load time into one weight per category and per number.

    The probability is the same sum scikit-learn computes (in another order), so it agrees with
    predict_proba to about 1e-16, at microseconds per customer instead of scikit-learn's validation.
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
        z = np.full(n, self.intercept)
        for field, weights in self.categorical:
            z += np.fromiter(map(weights.__getitem__, map(itemgetter(field), customers)), float, n)
        for field, weight in self.numeric:
            z += weight * np.fromiter(map(itemgetter(field), customers), float, n)
        return expit(z).tolist()


class SklearnScorer:
    """Any other fitted pair: the model's spelling restored, then scikit-learn itself."""

    def __init__(self, dv, model):
        self.dv, self.model = dv, model
        self.canonical = canonical_values()

    def score_many(self, customers: list[dict]) -> list[float]:
        rows = [{k: self.canonical[k][v] if k in self.canonical else v for k, v in c.items()} for c in customers]
        return self.model.predict_proba(self.dv.transform(rows))[:, 1].tolist()

    def score_one(self, customer: dict) -> float:
        return self.score_many([customer])[0]


def make_scorer(dv, model):
    check_vocabulary(dv)
    foldable = (
        isinstance(model, LogisticRegression)
        and len(model.classes_) == 2
        and model.coef_.shape == (1, len(dv.feature_names_))
    )
    return LinearScorer(dv, model) if foldable else SklearnScorer(dv, model)


@dataclass(frozen=True)
class ServedModel:
    """What the service needs of a model file: its scorer and the facts its model card reports."""

    path: Path
    sha256: str
    scorer: LinearScorer | SklearnScorer
    training: dict | None  # the metrics train.py wrote beside the model, when present


def load_served_model(path: Path) -> ServedModel:
    path = Path(path)
    dv, model = load_model(path)
    metrics_path = path.with_name(path.name + ".json")
    training = json.loads(metrics_path.read_text()) if metrics_path.exists() else None
    return ServedModel(path, file_sha256(path), make_scorer(dv, model), training)
