"""The prediction log's packed form: one row per write of the log's writer, its customers' columns as arrays end to
end, and its unpacking into the predictions table, one row per customer, which the report and outcomes read.

Why packed (docs/monitoring.md, The log): a row per customer cost the service more CPU than answering the customer;
a pack costs a batch a few percent of answering it. Readers unpack first (churn.monitor.store.Store.unpack):
monitor.py report and outcomes, and POST /outcomes.

A pack (churn.monitor.store.PACKED_COLUMNS):
- model_version, threshold: the served model's, which make each decision (probability >= threshold);
- answers: JSON [[endpoint, unix time, customers], ...], the answers in the pack's order;
- prediction_ids: the customers' ids, 16 octets each (churn.monitor.ids.octets);
- customer_ids: a JSON list of what each customer sent as its customerID (or null);
- layout: JSON [[column, numpy dtype, vocabulary or null], ...]; data: those columns' n values each, end to end.
  A category is codes into its vocabulary (the model's spellings, whichever a client sent), a number its values
  (a whole number in the least type its range fits), the probabilities, and the challenger's (NaN where it did not
  score) when any answer has them.
"""

import json
import time
from itertools import chain
from typing import NamedTuple

import numpy as np

from churn.model.schema import FEATURES, ID_COLUMN
from churn.model.scoring import SPELLINGS, canonical_values, columns_of
from churn.monitor import ids

CHALLENGER = "challenger_probability"
# Each accepted spelling's code, as columns_of gives it, means the model's spelling at the same place here.
VOCABULARIES = {
    field: [canonical_values()[field][spelling] for spelling in spellings] for field, spellings in SPELLINGS.items()
}
CODE_TYPE = np.dtype("<u1") if max(map(len, SPELLINGS.values())) <= 256 else np.dtype("<u2")
# A whole number in the least type that holds the schema's range; a number with a fraction as the float it is.
NUMBER_TYPES = {
    f.name: np.promote_types(np.min_scalar_type(f.minimum), np.min_scalar_type(f.maximum)).newbyteorder("<")
    if f.integer
    else np.dtype("<f8")
    for f in FEATURES
    if not f.values
}
PROBABILITY_TYPE = np.dtype("<f8")
_LAYOUT = [[field, CODE_TYPE.str, vocabulary] for field, vocabulary in VOCABULARIES.items()]
_LAYOUT += [[field, kind.str, None] for field, kind in NUMBER_TYPES.items()]
_LAYOUT.append(["probability", PROBABILITY_TYPE.str, None])
# The layout of a pack without the challenger's probabilities, and with them.
LAYOUTS = {False: json.dumps(_LAYOUT), True: json.dumps([*_LAYOUT, [CHALLENGER, PROBABILITY_TYPE.str, None]])}


class Queued(NamedTuple):
    """An answer as the log's queue holds it: a batch by its scorer's columns and its customers' customerID (its
    customers' dicts, kilobytes each, are let go with the answer), one customer by its dict."""

    endpoint: str
    unix_time: float
    prediction_ids: list[str]
    probabilities: list[float]
    challenger: list[float] | None
    columns: dict | None  # a batch's
    customer_ids: list | None  # a batch's: what each customer sent as its customerID, or None
    customer: dict | None  # one customer's


def queued(endpoint: str, answer) -> Queued:
    """What the log keeps of an Answer (churn.serve.endpoint) of endpoint."""
    common = endpoint, time.time(), answer.prediction_ids, answer.probabilities, answer.challenger_probabilities
    if answer.columns is None:
        return Queued(*common, None, None, answer.customers[0])
    return Queued(*common, answer.columns, [customer.get(ID_COLUMN) for customer in answer.customers], None)


def pack(batch: list[Queued], model_version: str, threshold: float) -> tuple:
    """The pack of queued answers: a batch's columns as scored, one-customer answers' made together (columns_of)."""
    ordered = [q for q in batch if q.columns is not None] + [q for q in batch if q.columns is None]
    parts = [q.columns for q in ordered if q.columns is not None]
    singles = [q.customer for q in ordered if q.columns is None]
    if singles:
        parts.append(columns_of(singles))
    arrays = [np.concatenate([part[field][0] for part in parts]).astype(CODE_TYPE) for field in VOCABULARIES]
    arrays += [np.concatenate([part[field] for part in parts]).astype(kind) for field, kind in NUMBER_TYPES.items()]
    probabilities = [np.fromiter(q.probabilities, PROBABILITY_TYPE, len(q.probabilities)) for q in ordered]
    arrays.append(np.concatenate(probabilities))
    shadowed = any(q.challenger is not None for q in ordered)
    if shadowed:
        challenger = [np.full(len(q.probabilities), np.nan) if q.challenger is None else q.challenger for q in ordered]
        arrays.append(np.concatenate(challenger, dtype=PROBABILITY_TYPE))
    customer_ids = chain.from_iterable(
        [q.customer.get(ID_COLUMN)] if q.columns is None else q.customer_ids for q in ordered
    )
    return (
        model_version,
        threshold,
        json.dumps([[q.endpoint, q.unix_time, len(q.prediction_ids)] for q in ordered]),
        ids.octets(list(chain.from_iterable(q.prediction_ids for q in ordered))),
        json.dumps(list(customer_ids)),
        LAYOUTS[shadowed],
        b"".join(array.tobytes() for array in arrays),
    )


def unpack(packed: tuple, time_value) -> list[tuple]:
    """A pack's rows in churn.monitor.store.PREDICTION_COLUMNS' order, times made by time_value (the store's kind)."""
    model_version, threshold, answers, prediction_ids, customer_ids, layout, data = packed
    prediction_ids = ids.texts(np.frombuffer(prediction_ids, np.uint8).reshape(-1, 16))
    n = len(prediction_ids)
    endpoints, times = [], []
    for endpoint, unix_time, count in json.loads(answers):
        endpoints += [endpoint] * count
        times += [time_value(unix_time)] * count
    columns, offset = {}, 0
    for name, kind, vocabulary in json.loads(layout):
        array = np.frombuffer(data, kind, n, offset)
        offset += array.nbytes
        columns[name] = np.array(vocabulary, object)[array].tolist() if vocabulary else array.tolist()
    probabilities = columns["probability"]
    challenger = [None if p != p else p for p in columns.get(CHALLENGER, [np.nan] * n)]  # NaN: not scored
    features = [columns[f.name] for f in FEATURES]
    decisions = [p >= threshold for p in probabilities]
    versions = [model_version] * n
    # Sent as text or a number; a NUL as U+FFFD, since PostgreSQL's text cannot hold it (SQLite's can: one rule).
    customers = [None if i is None else str(i).replace("\x00", "\ufffd") for i in json.loads(customer_ids)]
    table = [prediction_ids, times, versions, endpoints, customers, *features, probabilities, decisions, challenger]
    return list(zip(*table, strict=True))
