"""What a real `train.py --report` run writes for explanations: the training split's means, the committed model's
own."""

import json

import pytest

from churn.model.schema import FEATURES
from churn.model.training import encode, explanation_stats, split
from devtools import MODEL_FILE


def test_train_py_writes_the_training_splits_means(train_run, clean_df, explain_reference):
    dv, *_ = explain_reference
    written = json.loads(train_run.model.with_name(train_run.model.name + ".json").read_text())["explanation"]
    full_train = split(clean_df)[0]
    assert written["rows"] == len(full_train) == 5634
    for feature in FEATURES:
        mean = written["means"][feature.name]
        if feature.categorical:
            shares = full_train[feature.name].value_counts(normalize=True)
            assert mean == pytest.approx({v: shares.get(v, 0.0) for v in feature.clean_values}, rel=1e-12, abs=0)
        else:  # pandas sums in another order: the last digits may differ
            assert mean == pytest.approx(full_train[feature.name].mean(), rel=1e-12, abs=0)
    # The committed model's file carries the same statistics, so its /explain is current.
    committed = json.loads(MODEL_FILE.with_name(MODEL_FILE.name + ".json").read_text())["explanation"]
    assert committed == written == explanation_stats(dv, encode(full_train, dv))
