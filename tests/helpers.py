"""Helpers that tests of both kinds use: tests/unit (no real server or tool) and tests/integration (real ones)."""

import os
import pickle
import re
import subprocess
import sys

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.feature_extraction import DictVectorizer

from churn.model.schema import FEATURES, SAMPLE_CUSTOMER, InvalidValue
from devtools import ROOT

# ---- Customers and metrics

CONTRACTS = ("month-to-month", "one_year", "two_year")
INTERNET = ("dsl", "fiber_optic", "no")


def customers(n: int, start: int = 0) -> list[dict]:
    """n distinct valid customers whose probabilities spread over the histogram's buckets."""
    return [
        dict(
            SAMPLE_CUSTOMER,
            tenure=(i * 7) % 73,
            contract=CONTRACTS[i % 3],
            internetservice=INTERNET[(i // 3) % 3],
            onlinesecurity="no_internet_service" if INTERNET[(i // 3) % 3] == "no" else "no",
            monthlycharges=20 + (i * 3.3) % 90,
            totalcharges=((i * 7) % 73) * (20 + (i * 3.3) % 90),
        )
        for i in range(start, start + n)
    ]


PROBABILITY_SERIES = "churn_probability_customers_total"
PREDICTION_ID = re.compile(rb'"prediction_id":"[0-9a-f-]{36}",?')


def without_ids(answer):
    """An answer (its bytes, JSON or headers) without its prediction ids, which differ in every answer: to compare
    two answers to the same customers."""
    if isinstance(answer, bytes):
        return PREDICTION_ID.sub(b"", answer)
    if isinstance(answer, list):
        return [without_ids(item) for item in answer if not (isinstance(item, tuple) and item[0] == "X-Prediction-ID")]
    if isinstance(answer, dict):
        return {key: without_ids(value) for key, value in answer.items() if key != "prediction_id"}
    return answer


def samples(text: str) -> dict[tuple, float]:
    """Every sample of an exposition, keyed by (sample name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# ---- Batch scoring (churn.batch.chunks, score.py, churn.batch.spark)

TOLERANCE = 1e-12
BAD_CELLS = {  # (row, column) -> the text there in the bad-rows file; row 1 is the first after the header
    (3, "gender"): "robot",
    (5, "tenure"): "-1",
    (5, "MonthlyCharges"): "abc",
    (10, "SeniorCitizen"): "1.5",
    (12, "Contract"): "",
    (15, "TotalCharges"): "1e9",
}
BLANK_TOTAL_ROW = 8  # TotalCharges "" there: blank is 0, as training reads it, so the row is scored


def read_text_csv(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def message(column: str, value) -> str:
    """What the schema's one rule says about value, the message the API answers."""
    with pytest.raises(InvalidValue) as refused:
        [f for f in FEATURES if f.column == column][0].clean(value)
    return str(refused.value)


def write_bad_rows(raw_text: pd.DataFrame, path, rows: int = 20):
    """The dataset's first rows, as text, with BAD_CELLS and a blank TotalCharges written in."""
    df = raw_text.head(rows).copy()
    for (row, column), text in BAD_CELLS.items():
        df.loc[row - 1, column] = text
    df.loc[BLANK_TOTAL_ROW - 1, "TotalCharges"] = ""
    df.to_csv(path, index=False)
    return df


# ---- Model files a loader must refuse


class Payload:
    """Unpickling calls function(*args): what a hostile model file would do."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def hostile_pickles(sentinel) -> dict:
    """Each would create sentinel if its code ran: (pickle bytes, the global the loader must refuse)."""
    system = Payload(os.system, f"touch {sentinel}")
    system_global = f"{os.system.__module__}.system"  # posix.system here
    return {
        "os.system": (pickle.dumps(system), system_global),
        "open": (pickle.dumps(Payload(open, str(sentinel), "w")), f"{open.__module__}.open"),  # io.open
        "exec": (pickle.dumps(Payload(exec, f"open({str(sentinel)!r}, 'w')")), "builtins.exec"),
        # Hidden inside an otherwise valid pair: the global is refused before anything is called.
        "inside a pair": (pickle.dumps((DictVectorizer(), system)), system_global),
        "protocol 0": (pickle.dumps(system, protocol=0), system_global),
    }


class OtherVersionPickler(pickle.Pickler):
    """Pickles estimators as if another scikit-learn version had: sklearn writes its version in their state."""

    def __init__(self, file, pickled_version: str, which: tuple):
        super().__init__(file)
        self.pickled_version, self.which = pickled_version, which

    def reducer_override(self, obj):
        if isinstance(obj, self.which):
            function, args, state, *rest = obj.__reduce_ex__(pickle.DEFAULT_PROTOCOL)
            return (function, args, {**state, "_sklearn_version": self.pickled_version}, *rest)
        return NotImplemented


def run_score(*args, env=None) -> subprocess.CompletedProcess:
    """score.py with these arguments, as a process in the repository."""
    return subprocess.run(
        [sys.executable, "score.py", *map(str, args)], cwd=ROOT, capture_output=True, text=True, env=env
    )
