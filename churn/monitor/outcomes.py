"""Outcomes: whether a customer really churned, joined to the prediction it answers.

One rule reads them from POST /outcomes (JSON) and from `monitor.py outcomes FILE.csv`: each outcome names the
customer (customerID) or the prediction (prediction_id), says churned (true/false; the dataset's Churn column, Yes
or No, is read as churned) and when it was observed (observed_at, YYYY-MM-DD; today, UTC, when absent). An outcome
joins its prediction by prediction_id, else the customer's latest prediction made on or before observed_at
(churn.monitor.store.MATCHED_PREDICTION); one that matches none is kept, and joins a prediction logged later.
"""

import datetime
import functools
import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from churn.monitor.store import MATCHED_PREDICTION, OUTCOME_COLUMNS, Store

DATASET_CHURN = "Churn"  # the dataset's column, read as churned
MAX_DETAILS = 10


class Outcome(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    customerID: Annotated[str | None, Field(min_length=1, max_length=128)] = None
    prediction_id: uuid.UUID | None = None
    churned: bool
    observed_at: datetime.date = Field(default_factory=lambda: datetime.datetime.now(datetime.UTC).date())

    @field_validator("customerID")
    @classmethod
    def has_no_nul(cls, value: str | None) -> str | None:
        # PostgreSQL's text cannot hold it (the log keeps a NUL a prediction was sent with as U+FFFD).
        if value is not None and "\x00" in value:
            raise ValueError("a customerID holds no NUL character (\\u0000)")
        return value

    @model_validator(mode="after")
    def names_what_it_is_about(self):
        if self.customerID is None and self.prediction_id is None:
            raise ValueError("an outcome needs customerID or prediction_id")
        return self


class OutcomeError(ValueError):
    """Outcomes that cannot be read: the message in a sentence, the detail one entry per error (at most
    MAX_DETAILS), each naming the outcome (index) and field and what it allows."""

    def __init__(self, message: str, detail: list[dict], errors: int, status: int = 422):
        super().__init__(message)
        self.detail, self.errors, self.status = detail, errors, status


@functools.lru_cache(maxsize=4)
def outcomes_adapter(max_outcomes: int) -> TypeAdapter:
    return TypeAdapter(Annotated[list[Outcome], Field(min_length=1, max_length=max_outcomes)])


def read_outcomes(adapter: TypeAdapter, body: bytes | None = None, records: list[dict] | None = None) -> list[Outcome]:
    """The outcomes of a JSON body or of records (a CSV file's rows), or OutcomeError."""
    try:
        return adapter.validate_json(body) if body is not None else adapter.validate_python(records)
    except ValidationError as e:
        found = e.errors(include_url=False, include_input=False, include_context=False)
        if found[0]["type"] == "json_invalid":
            reason = found[0]["msg"].removeprefix("Invalid JSON: ")
            raise OutcomeError(f"The body is not valid JSON: {reason}", [], 1, 400) from None
        if found[0]["type"] == "too_long" and not found[0]["loc"]:  # as /predict answers too many customers
            message = f"Too many outcomes in one request: at most {adapter_limit(adapter)}"
            raise OutcomeError(message, [], 1, 413) from None
        detail = [describe(error) for error in found[:MAX_DETAILS]]
        fields = ", ".join(sorted({d["field"] for d in detail if d["field"]})) or "the body"
        raise OutcomeError(
            f"{len(found)} invalid outcome values, in {fields}; see detail", detail, len(found)
        ) from None


def adapter_limit(adapter: TypeAdapter) -> int:
    return adapter.json_schema()["maxItems"]


def describe(error: dict) -> dict:
    location = list(error["loc"])
    index = location.pop(0) if location and isinstance(location[0], int) else None
    field = ".".join(str(part) for part in location) or None
    detail = {"field": field, "message": error["msg"]}
    return detail if index is None else {"index": index, **detail}


def csv_records(rows: list[dict]) -> list[dict]:
    """A CSV file's rows as outcome records: blank cells are absent, and the dataset's Churn column is churned.
    Other columns (the dataset's features) are ignored."""
    keep = set(Outcome.model_fields)
    records = []
    for row in rows:
        record = {key: value.strip() for key, value in row.items() if key in keep and value and value.strip()}
        if DATASET_CHURN in row and "churned" not in record:
            record["churned"] = row[DATASET_CHURN].strip()
        records.append(record)
    return records


def add_outcomes(store: Store, outcomes: list[Outcome]) -> dict:
    """Store the outcomes; how many were received, and how many of them join a logged prediction now."""
    store.unpack()  # what the service logged so far, for the matching below
    now = datetime.datetime.now(datetime.UTC)
    rows = [
        (None if o.prediction_id is None else str(o.prediction_id), o.customerID, o.churned, o.observed_at, now)
        for o in outcomes
    ]
    first = store.query("SELECT coalesce(max(outcome_id), 0) FROM outcomes")[0][0] + 1
    store.insert("outcomes", OUTCOME_COLUMNS, rows)
    last = store.query("SELECT max(outcome_id) FROM outcomes")[0][0]
    matched = store.query(
        f"SELECT count(*) FROM outcomes o WHERE o.outcome_id BETWEEN ? AND ? "
        f"AND {MATCHED_PREDICTION} IN (SELECT prediction_id FROM predictions)",
        (first, last),
    )[0][0]
    return {"received": len(rows), "matched": matched, "unmatched": len(rows) - matched}


def receive(url: str, body: bytes, max_outcomes: int) -> dict:
    """POST /outcomes: a JSON array of outcomes stored in the log at url; OutcomeError or StoreError."""
    outcomes = read_outcomes(outcomes_adapter(max_outcomes), body=body)
    store = Store(url)
    try:
        return add_outcomes(store, outcomes)
    finally:
        store.close()
