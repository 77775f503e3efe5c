"""POST /predict and POST /explain: one object owns each endpoint, from the WSGI environ to the answer's bytes.

CustomerEndpoint does all of a request's work: readiness, content type, body size, one customer or many,
cleaning and validation, the answer, its encoding and the bookkeeping. Flask's view and the fast WSGI path
(service.FastPaths) both call it, so they answer every request, valid or not, with the same status, headers and
body.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError
from pydantic_core import from_json

from churn import metrics
from churn.schema import (
    FEATURES,
    MAX_DETAILS,
    MAX_FIELDS,
    Problems,
    clean_customer,
    exact_acceptors,
    exact_spelling,
)

JSON_WHITESPACE = b" \t\r\n"
READ_BLOCK = 1 << 16
# An over-limit body is read and discarded up to this many times the limit before the 413 is sent, as nginx's
# lingering close does: a client still sending (Python's http.client, urllib) reads the answer instead of a
# broken pipe. Beyond it the connection is closed; reading costs less than parsing a valid body would.
DISCARD_FACTOR = 4
STATUS_LINES = {
    200: "200 OK",
    400: "400 Bad Request",
    401: "401 Unauthorized",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    413: "413 Content Too Large",
    415: "415 Unsupported Media Type",
    422: "422 Unprocessable Content",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}


def error_body(message: str, detail: list | None = None, **counts) -> bytes:
    """The one JSON error shape of the service: {"error": sentence, "detail": [...], counts...}."""
    return json.dumps({"error": message, "detail": detail or [], **counts}, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    customers: int = 0  # scored, for the access log and metrics

    @property
    def status_line(self) -> str:
        return STATUS_LINES[self.status]

    @property
    def headers(self) -> list[tuple[str, str]]:
        # No Connection header (hop-by-hop, which WSGI servers refuse or drop): the server closes as it must.
        return [("Content-Type", "application/json"), ("Content-Length", str(len(self.body)))]


def refuse(status: int, message: str, detail: list | None = None, **counts) -> Answer:
    return Answer(status, error_body(message, detail, **counts))


def is_json(content_type: str) -> bool:
    mimetype = content_type.partition(";")[0].strip().lower()
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


class CustomerEndpoint:
    """An endpoint that takes one customer or an array of them and answers each in order.

    answer(customers, many) -> (the JSON answer: one object, or an array of one per customer; their probabilities);
    customers are keyed by the model's feature names. unavailable, when set, is the (status, message) every
    request gets instead.
    """

    def __init__(
        self,
        answer: Callable[[list[dict], bool], tuple[bytes, list[float]]],
        max_customers: int,
        max_body_bytes: int,
        unavailable: tuple[int, str] | None = None,
    ):
        self.answer = answer
        self.max_customers = max_customers
        self.max_body_bytes = max_body_bytes
        self.unavailable = unavailable
        self.acceptors = {key: adapter.validate_json for key, adapter in exact_acceptors(max_customers).items()}

    def __call__(self, environ) -> Answer:
        answer = self.respond(environ)
        environ["churn.customers"] = answer.customers  # for the request observer's log line
        return answer

    def respond(self, environ) -> Answer:
        if self.unavailable:
            return refuse(*self.unavailable)
        if not is_json(environ.get("CONTENT_TYPE", "")):
            return refuse(415, "Send the customer as JSON with the header Content-Type: application/json")
        body = self.read_body(environ)
        if isinstance(body, Answer):
            return body
        many = body.lstrip(JSON_WHITESPACE)[:1] == b"["
        customers = self.accept_exact(body, many)
        if isinstance(customers, Answer):
            return customers
        answered = None
        if customers is not None:
            try:
                answered = self.answer(customers, many)
            except KeyError:  # a field missing: the fast acceptor leaves that to the cleaning, which words it
                pass
        if answered is None:
            customers = self.clean(body, many)
            if isinstance(customers, Answer):
                return customers
            answered = self.answer(customers, many)
        body, probabilities = answered
        metrics.PREDICTIONS.inc(len(probabilities))
        if len(probabilities) == 1:
            metrics.PROBABILITY.observe(probabilities[0])
        else:
            metrics.observe_probabilities(probabilities)
        return Answer(200, body, customers=len(probabilities))

    def read_body(self, environ) -> bytes | Answer:
        stream, limit = environ["wsgi.input"], self.max_body_bytes
        length = environ.get("CONTENT_LENGTH", "")
        try:
            if length.isdigit():
                if int(length) > limit:
                    self.discard(stream, int(length))
                    return self.too_large()
                return stream.read(int(length))
            # No length: a chunked body (the server says it ends the stream) is read up to one byte past the limit.
            if not environ.get("wsgi.input_terminated"):
                return b""
            body = stream.read(limit + 1)
            if len(body) > limit:
                self.discard(stream, None)
                return self.too_large()
            return body
        except Exception as e:  # the server's own parser fails on a malformed chunked body as it is read
            return refuse(400, f"The body could not be read: {e}")

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

    def too_large(self) -> Answer:
        return refuse(413, f"The body is larger than {self.max_body_bytes} bytes")

    def accept_exact(self, body: bytes, many: bool) -> list[dict] | Answer | None:
        """The customers, if a fast acceptor takes the body; None when it cannot; or the answer to invalid JSON.

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
                return refuse(422, f"A customer has at most {MAX_FIELDS} fields")
            if e.error_count() == 1:
                first = e.errors(include_url=False, include_input=False, include_context=False)[0]
                if first["type"] == "json_invalid":
                    return refuse(400, f"The body is not valid JSON: {first['msg'].removeprefix('Invalid JSON: ')}")
        return None

    def clean(self, body: bytes, many: bool) -> list[dict] | Answer:
        """The customers cleaned one by one with the schema's rule, which words every error and counts them all,
        describing at most MAX_DETAILS; or the error answer."""
        data = from_json(body)
        problems = Problems()
        if many:
            if len(data) > self.max_customers:
                return refuse(413, f"Too many customers in one request: at most {self.max_customers}")
            customers = [clean_customer(customer, problems, index) for index, customer in enumerate(data)]
        elif isinstance(data, dict):
            customers = [clean_customer(data, problems)]
        else:
            customers = []
        if not customers:
            return refuse(422, "The body must be a customer object or a non-empty array of customer objects")
        if problems.errors:
            fields = ", ".join(sorted({str(d["field"]) for d in problems.details if d["field"]})) or "the body"
            shown = f"; the first {MAX_DETAILS} are in detail" if problems.errors > MAX_DETAILS else "; see detail"
            customers = f"{problems.customers} customer{'s' if problems.customers > 1 else ''}"
            message = f"{problems.errors} errors in {customers}, in {fields}{shown}"
            if problems.errors == 1:
                message = f"Invalid customer data in {fields}; see detail"
            return refuse(
                422, message, problems.details, errors=problems.errors, invalid_customers=problems.customers
            )
        return customers
