"""Loading the model file: no code in it runs, and every bad file stops the loader with a message naming it.

Both loaders are checked: churn.model.scoring's (what the service uses, stand-ins without scikit-learn) and
churn.model.training.load_model (real scikit-learn objects, read as safely).
"""

import io
import json
import pickle
import random
import subprocess
import sys
import sysconfig
from importlib.metadata import version
from pathlib import Path

import pytest
from sklearn.base import BaseEstimator
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression

from churn.model.modelfile import ModelLoadError, required_sklearn_version
from churn.model.schema import FEATURES, SAMPLE_CUSTOMER
from churn.model.scoring import LinearScorer, load_served_model
from churn.model.training import fit, load_model, save_model
from devtools import MODEL_FILE, ROOT
from tests.helpers import OtherVersionPickler, hostile_pickles

SKLEARN = version("scikit-learn")
LOADERS = {"served": load_served_model, "sklearn": load_model}


@pytest.fixture(params=LOADERS)
def loader(request):
    return LOADERS[request.param]


def refused(loader, path) -> str:
    with pytest.raises(ModelLoadError) as caught:
        loader(path)
    message = str(caught.value)
    assert str(path) in message
    return message


@pytest.mark.parametrize("kind", ["os.system", "open", "exec", "inside a pair", "protocol 0"])
def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(kind, loader, tmp_path):
    sentinel = tmp_path / "pwned"
    data, refused_global = hostile_pickles(sentinel)[kind]
    path = tmp_path / "model.bin"
    path.write_bytes(data)
    message = refused(loader, path)
    assert f"refused global {refused_global}" in message
    assert not sentinel.exists()


@pytest.mark.parametrize("which", [(DictVectorizer,), (LogisticRegression,), (DictVectorizer, LogisticRegression)])
def test_a_model_from_another_scikit_learn_version_names_both_and_how_to_retrain(which, loader, tmp_path):
    buffer = io.BytesIO()
    OtherVersionPickler(buffer, "0.24.2", which).dump(load_model(MODEL_FILE))
    path = tmp_path / "model.bin"
    path.write_bytes(buffer.getvalue())
    message = refused(loader, path)
    assert "0.24.2" in message and SKLEARN in message and "train.py" in message


def test_the_same_pickler_with_this_version_loads(tmp_path):
    """The control for the test above: only the version makes the difference."""
    buffer = io.BytesIO()
    OtherVersionPickler(buffer, SKLEARN, (BaseEstimator,)).dump(load_model(MODEL_FILE))
    path = tmp_path / "model.bin"
    path.write_bytes(buffer.getvalue())
    assert isinstance(load_served_model(path).scorer, LinearScorer)


def test_a_missing_file_names_its_path(loader, tmp_path):
    assert "cannot read" in refused(loader, tmp_path / "no-such-model.bin")


def test_a_directory_names_its_path(loader, tmp_path):
    assert "cannot read" in refused(loader, tmp_path)


def test_an_empty_file_names_its_path_and_how_to_make_one(loader, tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"")
    assert "train.py" in refused(loader, path)


@pytest.mark.slow  # every length of the file: about 7 s
def test_every_truncation_of_the_model_names_the_path(tmp_path):
    data = MODEL_FILE.read_bytes()
    path = tmp_path / "model.bin"
    for length in range(1, len(data)):
        path.write_bytes(data[:length])
        refused(load_served_model, path)


@pytest.mark.parametrize("length", [1, 100, 1000, -1])
def test_a_truncated_model_names_the_path_to_the_sklearn_loader(length, tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(MODEL_FILE.read_bytes()[:length])
    refused(load_model, path)


@pytest.mark.parametrize(
    "content",
    [(1, 2), ("DictVectorizer", "LogisticRegression"), [DictVectorizer(), LogisticRegression()], None],
    ids=["numbers", "names", "a list", "None"],
)
def test_a_pickle_of_something_else_is_not_a_model(content, loader, tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(pickle.dumps(content))
    assert "does not hold a (DictVectorizer, LogisticRegression) pair" in refused(loader, path)


def test_the_pair_in_the_wrong_order_is_not_a_model(loader, tmp_path):
    dv, model = load_model(MODEL_FILE)
    path = tmp_path / "model.bin"
    save_model(path, model, dv)
    refused(loader, path)


def test_an_unfitted_pair_names_the_path(tmp_path):
    path = tmp_path / "model.bin"
    save_model(path, DictVectorizer(sparse=False), LogisticRegression())
    refused(load_served_model, path)


def test_a_frame_length_beyond_memory_names_the_path(tmp_path):
    data = MODEL_FILE.read_bytes()
    # Protocol 4: PROTO 4, then FRAME and its 8-byte length.
    assert data[:3] == b"\x80\x04\x95"
    path = tmp_path / "model.bin"
    path.write_bytes(data[:3] + b"\xff" * 8 + data[11:])
    refused(load_served_model, path)


def test_damaged_bytes_load_a_pair_or_name_the_path(tmp_path, monkeypatch):
    """Any byte of the file changed: either it still reads as a servable pair, or the start stops cleanly.

    numpy takes a dtype's flags from the pickle: a damaged flags byte can mark an int32 dtype as holding
    objects, and numpy then reports through sys.unraisablehook (it cannot raise there) that it has no loop to
    clear such an array, and the load fails. That report is expected for a file the loader refuses, and only
    for one: anything else reported fails the test.
    """
    reports = []
    monkeypatch.setattr(sys, "unraisablehook", reports.append)
    data = MODEL_FILE.read_bytes()
    path = tmp_path / "model.bin"
    rng = random.Random(6)
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(150):
        damaged = bytearray(data)
        value = rng.choice([0x00, 0xFF, rng.randrange(256)])
        offset = rng.randrange(len(data))
        damaged[offset] = value
        path.write_bytes(bytes(damaged))
        try:
            load_served_model(path)
            outcome = "loaded"
        except ModelLoadError as e:
            assert str(path) in str(e)
            outcome = "refused"
        outcomes[outcome] += 1
        for report in reports:
            what = f"byte {offset} set to {value:#04x}: {outcome}, and reported {report.exc_value!r}"
            assert outcome == "refused", what
            assert isinstance(report.exc_value, RuntimeError) and "get_clear_loop" in str(report.exc_value), what
        reports.clear()
    assert outcomes["refused"] > 0


def test_train_py_s_save_format_loads_with_both_loaders(clean_df, tmp_path):
    dv, model = fit(clean_df.head(500))
    path = tmp_path / "model.bin"
    save_model(path, dv, model)
    loaded_dv, loaded_model = load_model(path)
    assert loaded_dv.feature_names_ == dv.feature_names_
    assert (loaded_model.coef_ == model.coef_).all()
    assert isinstance(load_served_model(path).scorer, LinearScorer)


# ---- Only a fitted binary logistic regression over the schema's columns is served


def pair_with(clean_df, make_model):
    """The committed model's vectorizer, and a model from make_model(X, frame) fitted on 1,000 rows of it."""
    dv, _ = load_model(MODEL_FILE)
    rows = clean_df.head(1000)
    return dv, make_model(dv.transform(rows[[f.name for f in FEATURES]].to_dict(orient="records")), rows)


@pytest.mark.parametrize(
    "make_model",
    [
        # Before, these loaded with a scikit-learn fallback scorer: the first answered P(class 1), here a one-year
        # contract, as the churn probability; the other two failed on every request.
        lambda X, rows: LogisticRegression(solver="newton-cholesky").fit(X, rows["contract"]),
        lambda X, rows: LogisticRegression(solver="newton-cholesky").fit(X[:, :5], rows["churn"]),
        lambda X, rows: LogisticRegression(),
    ],
    ids=["three classes", "fitted on other columns", "unfitted"],
)
def test_a_pair_that_is_not_a_binary_logistic_regression_over_the_schema_is_refused(make_model, clean_df, tmp_path):
    path = tmp_path / "model.bin"
    save_model(path, *pair_with(clean_df, make_model))
    assert "is not a fitted binary LogisticRegression over the DictVectorizer's 45 features" in refused(
        load_served_model, path
    )


# ---- The service's image installs no scikit-learn, pandas or scipy

TRAINING_ONLY = ("sklearn", "scikit_learn", "scipy", "pandas")


@pytest.fixture(scope="module")
def serving_site(tmp_path_factory):
    """A site-packages of links to this venv's packages, less the training-only ones: what the image installs."""
    site = Path(sysconfig.get_paths()["purelib"])
    serving = tmp_path_factory.mktemp("serving-site")
    for entry in site.iterdir():
        if not entry.name.lower().startswith(TRAINING_ONLY):
            (serving / entry.name).symlink_to(entry)
    return serving


def run_serving_only(serving_site, code: str) -> subprocess.CompletedProcess:
    # -S: the venv's own site-packages is not added; only the serving packages and the project are importable.
    prelude = f"import sys; sys.path[:0] = [{str(serving_site)!r}, {str(ROOT)!r}]\n"
    return subprocess.run(
        [sys.executable, "-S", "-c", prelude + code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def locked_sklearn() -> str:
    return json.loads((ROOT / "Pipfile.lock").read_text())["develop"]["scikit-learn"]["version"].removeprefix("==")


def test_without_scikit_learn_models_are_checked_against_the_locked_version(serving_site, tmp_path):
    other = tmp_path / "other.bin"
    buffer = io.BytesIO()
    OtherVersionPickler(buffer, "0.24.2", (BaseEstimator,)).dump(load_model(MODEL_FILE))
    other.write_bytes(buffer.getvalue())
    code = f"""
import importlib.util, sys
from churn.model.explain import make_explainer
from churn.model.schema import SAMPLE_CUSTOMER
from churn.model.scoring import ModelLoadError, load_served_model
assert not [m for m in {TRAINING_ONLY!r} if importlib.util.find_spec(m)], "a training package is importable"
model = load_served_model({str(MODEL_FILE)!r})
print(model.sklearn_version, model.scorer.score_one(SAMPLE_CUSTOMER))
print(make_explainer(model).explain_one(SAMPLE_CUSTOMER)["reasons"][0]["feature"])
try:
    load_served_model({str(other)!r})
except ModelLoadError as e:
    print(e)
print(sorted(m for m in sys.modules if m.split(".")[0] in {TRAINING_ONLY!r}))
"""
    run = run_serving_only(serving_site, code)
    assert run.returncode == 0, run.stderr
    version_line, reason, refusal, imported = run.stdout.splitlines()
    served = load_served_model(MODEL_FILE)
    assert version_line.split() == [locked_sklearn(), repr(served.scorer.score_one(SAMPLE_CUSTOMER))]
    assert reason == "tenure"
    assert f"model file {other} was pickled with scikit-learn 0.24.2" in refusal
    assert f"takes models from scikit-learn {locked_sklearn()}" in refusal and "train.py" in refusal
    assert imported == "[]"


def test_without_scikit_learn_or_the_lock_the_model_is_refused_with_the_reason(serving_site, tmp_path):
    missing_lock = tmp_path / "Pipfile.lock"
    code = f"""
import churn.model.modelfile
from churn.model.scoring import ModelLoadError, load_served_model
churn.model.modelfile.LOCK_FILE = {str(missing_lock)!r}
try:
    load_served_model({str(MODEL_FILE)!r})
except ModelLoadError as e:
    print(e)
"""
    run = run_serving_only(serving_site, code)
    assert run.returncode == 0, run.stderr
    assert f"scikit-learn is not installed and {missing_lock} does not say which version" in run.stdout


def test_the_lock_pins_the_installed_scikit_learn():
    """So that the check means the same with scikit-learn (make test) and without it (the image)."""
    assert locked_sklearn() == SKLEARN == required_sklearn_version()
