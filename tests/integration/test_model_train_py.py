"""train.py as a process: the course's AUC, the pickled pair, the committed model reproduced and kept, and the one
line it ends with offline and without the dataset."""

import os
import pickle
import re
import shutil
import subprocess
import sys

import pytest
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression

from churn.model.data import DATA_FILE_NAME, DATA_URL
from churn.model.training import load_model, same_fit, save_model
from devtools import MODEL_FILE, ROOT, free_port


@pytest.fixture(scope="module")
def trained(train_run):
    # Warnings go to stderr (and a ConvergenceWarning is an error in this run), so a clean stderr means it converged.
    assert "Warning" not in train_run.stderr, train_run.stderr
    return train_run.stdout, train_run.model


def test_reproduces_the_course_auc(trained):
    stdout, _ = trained
    folds = re.findall(r"auc on fold (\d) is (0\.\d+)", stdout)
    assert [int(fold) for fold, _ in folds] == [0, 1, 2, 3, 4]
    mean, std = map(float, re.search(r"C=1.0 (0\.\d+) \+- (0\.\d+)", stdout).groups())
    assert (mean, std) == (0.842, 0.007)
    test_auc = float(re.search(r"^auc=(0\.\d+)$", stdout, re.M).group(1))
    assert abs(test_auc - 0.858) <= 0.005


def test_pickles_exactly_the_pair(trained):
    _, output = trained
    with open(output, "rb") as f:
        pair = pickle.load(f)
    assert type(pair) is tuple and len(pair) == 2
    assert isinstance(pair[0], DictVectorizer) and isinstance(pair[1], LogisticRegression)
    assert output.with_name(output.name + ".json").exists()


def test_committed_model_is_what_train_py_makes(trained):
    """On any machine: the BLAS kernel and thread count move coefficients by ~1e-14, which same_fit allows."""
    _, output = trained
    assert same_fit(MODEL_FILE, *load_model(output))


def test_retraining_keeps_a_model_that_differs_only_by_rounding(dataset_path, tmp_path):
    """`make train` on another machine: the committed model, as that machine's BLAS would round it, stays as it is."""
    dv, model = load_model(MODEL_FILE)
    model.coef_ = model.coef_ * (1 + 1e-13)
    output = tmp_path / MODEL_FILE.name
    save_model(output, dv, model)
    before = output.read_bytes()
    run = subprocess.run(
        [sys.executable, "train.py", "--data", str(dataset_path), "--n-splits", "2", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert f"kept {output}" in run.stdout
    assert output.read_bytes() == before


def test_offline_without_the_dataset_train_py_ends_in_one_line(tmp_path):
    """A clone with no dataset anywhere and no way out: one line naming the places, the URL and --data."""
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(ROOT / "train.py", clone)
    shutil.copytree(ROOT / "churn", clone / "churn", ignore=shutil.ignore_patterns("__pycache__"))
    nowhere = f"http://127.0.0.1:{free_port()}"  # a proxy that refuses: no request leaves the machine
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("churn_data", "no_proxy")}
    run = subprocess.run(
        [sys.executable, "train.py"],
        cwd=clone,
        env={**env, "http_proxy": nowhere, "https_proxy": nowhere, "HTTP_PROXY": nowhere, "HTTPS_PROXY": nowhere},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert str(clone / "data" / DATA_FILE_NAME) in lines[0] and DATA_URL in lines[0] and "--data PATH" in lines[0]
    assert not (clone / "data" / DATA_FILE_NAME).exists()
