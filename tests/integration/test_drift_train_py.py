"""What a real `train.py` run writes as the reference profile: the committed sidecar's (to the solver's noise)."""

import json

import pytest

from churn.monitor.drift import Reference
from tests.conftest import MODEL_FILE


def reference_of(model_path) -> Reference:
    return Reference.from_json(json.loads(model_path.with_name(model_path.name + ".json").read_text())["reference"])


def test_train_py_writes_the_committed_reference(train_run):
    written, committed = reference_of(train_run.model), reference_of(MODEL_FILE)
    assert written.rows == committed.rows
    assert written.shares.keys() == committed.shares.keys() and written.edges.keys() == committed.edges.keys()
    for name in written.shares:
        assert written.shares[name] == pytest.approx(committed.shares[name], abs=1e-12), name
    for name in written.edges:  # the probability's edges come from the fit: machines differ in the 14th digit
        assert written.edges[name] == pytest.approx(committed.edges[name], rel=1e-9), name
    assert written.mean_abs_contribution == pytest.approx(committed.mean_abs_contribution, rel=1e-9)
