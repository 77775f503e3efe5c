"""POST /predict and POST /explain: one object owns each endpoint, from the WSGI environ to the answer's bytes.

CustomerEndpoint does all of a request's work: readiness, content type, body size, one customer or many,
cleaning and validation, the answer, its encoding and the bookkeeping. Flask's view and the fast WSGI path
(service.FastPaths) both call it, so they answer every request, valid or not, with the same status, headers and
body.
"""

import gc
import json
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError
from pydantic_core import from_json

from churn import errors, logs, metrics
from churn.errors import ServiceError
from churn.model.schema import (
    FEATURES,
    MAX_DETAILS,
    MAX_FIELDS,
    Problems,
    clean_customer,
    clean_customers,
    exact_acceptors,
    exact_spelling,
    feature_for,
)

JSON_WHITESPACE = b" \t\r\n"
READ_BLOCK = 1 << 16
# An over-limit body is read and discarded up to this many times the limit before the 413 is sent, as nginx's
# lingering close does: a client still sending (Python's http.client, urllib) reads the answer instead of a
# broken pipe. Beyond it the connection is closed; reading costs less than parsing a valid body would.
DISCARD_FACTOR = 4
# No Connection header (hop-by-hop, which WSGI servers refuse or drop): the server closes as it must.
JSON_HEADERS = ("Content-Type", "application/json")


@dataclass(frozen=True)
class Answer:
    """A 200 answer: its JSON body, and the customers it answers (cleaned, by the model's feature names) with their
    probabilities and prediction ids, in order, and for a batch its columns as the scorer read them: what the
    monitoring after the answer observes; with a shadow challenger, its probabilities of the same customers
    (churn.monitor.challenger), which the body never shows."""

    body: bytes
    probabilities: list[float]
    prediction_ids: list[str]
    customers: list[dict]
    challenger_probabilities: list[float] | None = None
    columns: dict | None = None

    @property
    def headers(self) -> list[tuple[str, str]]:
        headers = [JSON_HEADERS, ("Content-Length", str(len(self.body)))]
        if len(self.prediction_ids) == 1:
            headers.append(("X-Prediction-ID", self.prediction_ids[0]))
        return headers


def is_json(content_type: str) -> bool:
    mimetype = content_type.partition(";")[0].strip().lower()
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


class CustomerEndpoint:
    """An endpoint that takes one customer or an array of them and answers each in order.

    answer(customers, many) -> (the JSON answer: one object, or an array of one per customer; their probabilities;
    their prediction ids; the challenger's probabilities, or None; a batch's columns as the scorer read them, or
    None); customers are keyed by the model's feature names. Every refusal is a ServiceError. unavailable, when set,
    is the refusal every request gets instead (the model is not ready, or cannot explain). drift, when set, counts
    the answered customers (churn.monitor.live); challenger, when set, counts each answer's challenger probabilities
    (churn.monitor.challenger.Challenger); prediction_log, when set, is given each answer under the endpoint's name
    (churn.monitor.predictionlog).
    """

    def __init__(
        self,
        answer: Callable[[list[dict], bool], tuple[bytes, list[float], list[str], list[float] | None]],
        max_customers: int,
        max_body_bytes: int,
    ):
        self.answer = answer
        self.max_customers = max_customers
        self.max_body_bytes = max_body_bytes
        self.unavailable: ServiceError | None = None
        self.name = ""
        self.drift = None
        self.challenger = None
        self.prediction_log = None
        self.acceptors = {key: adapter.validate_json for key, adapter in exact_acceptors(max_customers).items()}

    def __call__(self, environ) -> Answer:
        """A request, from its WSGI environ: read, answered and counted."""
        if self.unavailable:
            raise self.unavailable
        if not is_json(environ.get("CONTENT_TYPE", "")):
            raise ServiceError(415, errors.NOT_JSON)
        answer = self.respond(self.read_body(environ))
        metrics.observe_scores(answer.probabilities)
        if self.drift is not None:
            self.drift.observe(answer.customers, answer.probabilities, answer.columns)
        if answer.challenger_probabilities is not None:
            self.challenger.observe(answer)
        if self.prediction_log is not None:
            self.prediction_log.put(self.name, answer)
        logs.count_customers(len(answer.probabilities))
        return answer

    def respond(self, body: bytes) -> Answer:
        """The answer to a JSON body: the fast acceptors' customers when they take it, else the schema's cleaning."""
        many = body.lstrip(JSON_WHITESPACE)[:1] == b"["
        customers = self.accept_exact(body, many)
        # A key sent twice in one object reaches pydantic's dict as its last value. One customer's body is checked
        # for it (fewer key separators than keys is the usual case, at well under 1% of a request); a batch's is
        # not: the scan costs 7-11% of scoring it (docs/reliability.md).
        if customers is not None and not many and body.count(b'":') != len(customers[0]):
            customers = None
        if customers is not None:
            try:
                return self.answered(customers, many)
            except KeyError:  # a field missing: the fast acceptor leaves that to the cleaning, which words it
                pass
        return self.answered(self.clean(body, many), many)

    def answered(self, customers: list[dict], many: bool) -> Answer:
        body, probabilities, prediction_ids, challenger_probabilities, columns = self.answer(customers, many)
        return Answer(body, probabilities, prediction_ids, customers, challenger_probabilities, columns)

    def read_body(self, environ) -> bytes:
        stream, limit = environ["wsgi.input"], self.max_body_bytes
        length = environ.get("CONTENT_LENGTH", "")
        try:
            if length.isdigit():
                if int(length) > limit:
                    self.discard(stream, int(length))
                    raise ServiceError(413, errors.too_large(limit))
                return stream.read(int(length))
            # No length: a chunked body (the server says it ends the stream) is read up to one byte past the limit.
            if not environ.get("wsgi.input_terminated"):
                return b""
            body = stream.read(limit + 1)
            if len(body) > limit:
                self.discard(stream, None)
                raise ServiceError(413, errors.too_large(limit))
            return body
        except ServiceError:
            raise
        except Exception as e:  # the server's own parser fails on a malformed chunked body as it is read
            raise ServiceError(400, f"The body could not be read: {e}") from None

    def discard(self, stream, length: int | None) -> None:
        """Read and drop what the client sends, up to DISCARD_FACTOR times the limit."""
        budget = DISCARD_FACTOR * self.max_body_bytes
        if length is not None:
            budget = min(length, budget)
        dropped = 0
        while dropped < budget:
            block = stream.read(min(READ_BLOCK, budget - dropped))
            if not block:
                break
            dropped += len(block)

    def accept_exact(self, body: bytes, many: bool) -> list[dict] | None:
        """The customers, if a fast acceptor takes the body; None when it cannot; ServiceError for invalid JSON.

        One acceptor takes the model's spelling and one the dataset's, each exactly; anything else (another or a
        mixed spelling, numbers as text, an error) is left to clean(). Their fields are not required: pydantic
        words a missing field with the whole object as its input, which costs as much as the object is large.
        """
        accept = self.acceptors[exact_spelling(body), many]
        try:
            return accept(body) if many else [accept(body)]
        except ValidationError as e:
            # Invalid JSON is then the one error; a body with a million unknown keys has a million, never listed,
            # and more errors than a customer of MAX_FIELDS fields can have are a customer of too many fields.
            if e.error_count() > MAX_FIELDS + len(FEATURES):
                raise ServiceError(422, errors.too_many_fields(MAX_FIELDS)) from None
            if e.error_count() == 1:
                first = e.errors(include_url=False, include_input=False, include_context=False)[0]
                if first["type"] == "json_invalid":
                    reason = first["msg"].removeprefix("Invalid JSON: ")
                    raise ServiceError(400, f"The body is not valid JSON: {reason}") from None
        return None

    def clean(self, body: bytes, many: bool) -> list[dict]:
        """The customers cleaned one by one with the schema's rule, which words every error and counts them all,
        describing at most MAX_DETAILS; or ServiceError.

        The cyclic collector is off meanwhile: a body of thousands of objects and arrays would set it walking every
        object there is, again and again, though none is garbage yet; and a refused body is released before it is
        back on, so that it never walks them at all (about a third of a refusal's cost, measured)."""
        collecting = gc.isenabled()
        gc.disable()
        try:
            cleaned = self.clean_parsed(body, from_json(body), many)  # the body's objects are gone on return
        finally:
            if collecting:
                gc.enable()
        if isinstance(cleaned, ServiceError):
            raise cleaned
        return cleaned

    def clean_parsed(self, body: bytes, data, many: bool) -> list[dict] | ServiceError:
        problems = Problems()
        if many:
            if len(data) > self.max_customers:
                return ServiceError(413, errors.too_many(self.max_customers))
            customers = clean_customers(data, problems)
        elif isinstance(data, dict):
            customers = [clean_customer(data, problems)]
            if repeated := repeated_keys(body, data):
                problems.customers += customers[0] is not None  # not yet counted as invalid
                for key in repeated:
                    problems.add(None, key, f"{key!r} is sent more than once, with different values", feature_for(key))
        else:
            customers = []
        if not customers:
            return ServiceError(422, errors.NO_CUSTOMERS)
        if not problems.errors:
            return customers
        metrics.count_refused(problems.fields)
        return invalid_customers(problems)


def repeated_keys(body: bytes, obj: dict) -> list[str]:
    """The keys of one JSON object (obj, as read from body) sent more than once with different values."""
    if len(obj) > MAX_FIELDS or body.count(b'":') <= len(obj):  # no key twice, or too many keys to look
        return []
    first, repeated = {}, []
    for key, value in json.loads(body, object_pairs_hook=list):
        if key in first and first[key] != value and key not in repeated:
            repeated.append(key)
        first.setdefault(key, value)
    return repeated


def invalid_customers(problems: Problems) -> ServiceError:
    fields = ", ".join(sorted({str(d["field"]) for d in problems.details if d["field"]})) or "the body"
    if problems.errors == 1:
        message = f"Invalid customer data in {fields}; see detail"
    else:
        shown = f"; the first {MAX_DETAILS} are in detail" if problems.errors > MAX_DETAILS else "; see detail"
        customers = f"{problems.customers} customer{'s' if problems.customers > 1 else ''}"
        message = f"{problems.errors} errors in {customers}, in {fields}{shown}"
    return ServiceError(422, message, problems.details, errors=problems.errors, invalid_customers=problems.customers)
