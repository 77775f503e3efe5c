import pickle
import re

import numpy as np
import pytest
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression

from tests.conftest import MODEL_FILE


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
    _, output = trained
    with open(output, "rb") as f:
        dv, model = pickle.load(f)
    with open(MODEL_FILE, "rb") as f:
        committed_dv, committed_model = pickle.load(f)
    assert dv.feature_names_ == committed_dv.feature_names_
    np.testing.assert_allclose(model.coef_, committed_model.coef_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.intercept_, committed_model.intercept_, rtol=0, atol=1e-12)
