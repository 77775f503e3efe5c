"""Fit, cross-validate, save and load the churn model: a DictVectorizer + LogisticRegression pair.

Serving does not import this module (it would import scikit-learn), nor does this import serving: both read the
model file through churn.model.modelfile.
"""

import math
import pickle
from pathlib import Path

import numpy as np
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold, train_test_split

from churn.model.data import TARGET
from churn.model.modelfile import ModelLoadError, unpickle_pair
from churn.model.schema import FEATURES

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


def encode(df, dv) -> np.ndarray:
    """The cleaned frame as the model's columns."""
    return dv.transform(df[FEATURE_NAMES].to_dict(orient="records"))


def predict(df, dv, model) -> np.ndarray:
    return model.predict_proba(encode(df, dv))[:, 1]


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


def mean_abs_contributions(dv, model, X) -> dict[str, float]:
    """Each feature's mean |contribution| to the log-odds over X (dv's encoding of the training split): a column's
    contribution is its weight times its value's distance from the column's mean (churn.model.explain's SHAP
    values), a feature's the sum over its columns."""
    X = np.asarray(X, dtype=float)
    contributions = (X - X.mean(axis=0)) * model.coef_[0]
    column = {name: i for i, name in enumerate(dv.feature_names_)}
    means = {}
    for f in FEATURES:
        names = [f"{f.name}{dv.separator}{v}" for v in f.clean_values] if f.categorical else [f.name]
        means[f.name] = float(np.abs(contributions[:, [column[n] for n in names]].sum(axis=1)).mean())
    return means


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


def load_model(path: Path):
    """(dv, model) as scikit-learn objects, read as safely as the service reads them.

    The file is first checked with stand-ins (admitted globals, pair, scikit-learn version), so nothing of
    it reaches scikit-learn before it has passed.
    """
    unpickle_pair(path)
    return unpickle_pair(path, stand_ins=False)


# The solver's sums run in an order set by the machine's BLAS kernel and thread count, so the same data and
# code give coefficients that differ in the 14th digit from one machine to another (3e-14 seen). Fits closer
# than this are the same model.
FIT_RTOL, FIT_ATOL = 1e-9, 1e-12


def same_fit(path: Path, dv, model) -> bool:
    """Whether path already holds this fit: the same fitted state (vocabulary, parameters, classes, scikit-learn
    version...) with its floats equal within FIT_RTOL and FIT_ATOL. A file that does not load is not the same."""
    try:
        stored = load_model(path)
    except ModelLoadError:
        return False
    return all(_same_state(vars(old), vars(new)) for old, new in zip(stored, (dv, model), strict=True))


def _same_state(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_state(a[key], b[key]) for key in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(map(_same_state, a, b))
    if isinstance(a, np.ndarray):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if np.issubdtype(a.dtype, np.floating):
            return bool(np.allclose(a, b, rtol=FIT_RTOL, atol=FIT_ATOL))
        return bool(np.array_equal(a, b))
    if isinstance(a, float):
        return math.isclose(a, b, rel_tol=FIT_RTOL, abs_tol=FIT_ATOL)
    return bool(a == b)
