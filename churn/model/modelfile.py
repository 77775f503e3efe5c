"""The model file's format, shared by training and serving: the pickled (dv, model) pair, read safely, and the JSON
sidecar beside it (what train.py recorded: metrics, and the statistics explanations need).

Nothing here imports scikit-learn: serving reads the pickle into stand-ins; training (churn.model.training) reads it
into scikit-learn's own classes once it has passed the same checks.
"""

import io
import json
import math
import pickle
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

EXPLANATION_KEY = "explanation"  # the sidecar's entry for churn.model.explain's statistics
REFERENCE_KEY = "reference"  # the sidecar's entry for the training split's profile (churn.monitor.drift)
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
LOCK_FILE = Path(__file__).resolve().parents[2] / "Pipfile.lock"


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


def sidecar_path(model_path: Path) -> Path:
    """Where train.py writes a model's metrics and explanation statistics: beside it, as <model file>.json."""
    return model_path.with_name(model_path.name + ".json")


class SidecarError(ValueError):
    """The sidecar cannot be used; the message says what is wrong with it (the caller names the file)."""


def _refuse_constant(name: str):
    raise SidecarError(f"holds {name}, which is not a number JSON allows")


def read_sidecar(model_path: Path) -> tuple[dict | None, str | None]:
    """(what train.py recorded beside the model, None) or (None, what is wrong with it). Never raises: a sidecar
    serves the model card and explanations, and must never stop the model from predicting."""
    path = sidecar_path(model_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, "is missing"
    except (OSError, UnicodeDecodeError) as e:
        return None, f"cannot be read ({getattr(e, 'strerror', None) or type(e).__name__})"
    try:
        content = json.loads(text, parse_constant=_refuse_constant)  # NaN would make /model invalid JSON
    except SidecarError as e:
        return None, str(e)
    except ValueError as e:
        return None, f"is not JSON ({e})"
    if not isinstance(content, dict):
        return None, f"is not a JSON object but a {type(content).__name__}"
    if not all(isinstance(x, float | int) and math.isfinite(x) for x in _numbers(content)):
        return None, "holds a number too large for a float"
    return content, None


def _numbers(value):
    if isinstance(value, dict):
        value = value.values()
    if isinstance(value, list | tuple | type({}.values())):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, float | int) and not isinstance(value, bool):
        yield value
