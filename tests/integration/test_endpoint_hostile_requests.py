"""A corpus of hostile and odd requests, sent byte for byte to the real gunicorn.

Each request the application sees gets its documented 4xx with a JSON error whose detail names the field
(and the batch index) where there is one; after each, the service still scores the sample customer, and at
the end no worker has died and none logged an error. Requests malformed at the HTTP level never reach the
application: gunicorn itself answers them, with an HTML page, and they are checked apart.
"""

import http.client
import json
import socket
from dataclasses import dataclass, field

import pytest

from churn.model.schema import FEATURES, SAMPLE_CUSTOMER
from devtools import free_port, gunicorn_command, running_server, wait_for, worker_pids

MAX_BODY = 65536
MAX_CUSTOMERS = 50
ALL_FIELDS = {f.name for f in FEATURES}


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        assert self.headers.get_content_type() == "application/json", (self.status, self.body[:300])
        return json.loads(self.body)


def exchange(port: int, request: bytes, method: str = "POST") -> Answer:
    """Send raw bytes, end the sending side (as a client with nothing more to say does), read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        return Answer(response.status, response.headers, response.read())


def http_request(method: str, path: str, body: bytes = b"", headers: dict | None = None) -> bytes:
    headers = {"Host": "127.0.0.1", **(headers or {})}
    if body and "Transfer-Encoding" not in headers:
        headers.setdefault("Content-Length", str(len(body)))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode("latin-1") + body


def post(body: bytes, content_type: str | None = "application/json", **headers) -> bytes:
    if content_type:
        headers["Content-Type"] = content_type
    return http_request("POST", "/predict", body, headers)


def chunked(body: bytes, size: int = 4096, content_type: str = "application/json") -> bytes:
    """body in chunks of size bytes: no Content-Length, so the body limit must be enforced while reading."""
    chunks = b"".join(
        b"%x\r\n%b\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size)
    )
    return post(chunks + b"0\r\n\r\n", content_type, **{"Transfer-Encoding": "chunked"})


def chunked_raw(encoded: bytes) -> bytes:
    return post(encoded, **{"Transfer-Encoding": "chunked"})


def dumps(value) -> bytes:
    # json.dumps writes NaN and Infinity as the bare literals a careless client sends.
    return json.dumps(value).encode()


def customer(**changes) -> dict:
    return {**SAMPLE_CUSTOMER, **changes}


SAMPLE = dumps(SAMPLE_CUSTOMER)


@dataclass
class Case:
    name: str
    request: bytes
    status: int
    # (batch index or None, field as sent): each must be in the error's detail.
    fields: list = field(default_factory=list)
    method: str = "POST"


def bad_batch(rows: dict) -> bytes:
    batch = [SAMPLE_CUSTOMER] * 6
    return dumps([rows.get(i, c) for i, c in enumerate(batch)])


CASES = [
    # -- 400: the body is not JSON
    Case("truncated object", post(SAMPLE[: len(SAMPLE) // 2]), 400),
    Case("last byte missing", post(SAMPLE[:-1]), 400),
    Case("lone brace", post(b"{"), 400),
    Case("not json at all", post(b"churn please"), 400),
    Case("empty body", post(b""), 400),
    Case("trailing garbage", post(SAMPLE + b" xyz"), 400),
    Case("two documents", post(SAMPLE + SAMPLE), 400),
    Case("single quotes", post(SAMPLE.replace(b'"', b"'")), 400),
    Case("a comment", post(b"/* hi */" + SAMPLE), 400),
    Case("invalid utf-8 in a value", post(SAMPLE.replace(b'"female"', b'"fem\xffale"')), 400),
    Case("invalid utf-8 first byte", post(b"\xff" + SAMPLE), 400),
    Case("utf-8 byte order mark", post(b"\xef\xbb\xbf" + SAMPLE), 400),
    Case("utf-16", post(SAMPLE.decode().encode("utf-16")), 400),
    Case("lone surrogate escape", post(SAMPLE.replace(b'"female"', b'"\\ud800"')), 400),
    Case("deeply nested arrays", post(b"[" * 50_000), 400),
    Case("deeply nested objects", post(b'{"a":' * 12_000), 400),
    Case("deep nesting in an ignored field", post(SAMPLE[:-1] + b', "x": ' + b"[" * 300 + b"]" * 300 + b"}"), 400),
    Case("chunked body cut short", chunked_raw(b"%x\r\n%b" % (len(SAMPLE) + 50, SAMPLE)), 400),
    Case("chunk size not hex", chunked_raw(b"zz\r\n" + SAMPLE + b"\r\n0\r\n\r\n"), 400),
    Case("negative chunk size", chunked_raw(b"-5\r\nhello\r\n0\r\n\r\n"), 400),
    Case("chunk without its CRLF", chunked_raw(b"5\r\nhelloXX0\r\n\r\n"), 400),
    Case("control byte in a chunk extension", chunked_raw(b"5;\x01\r\nhello\r\n0\r\n\r\n"), 400),
    Case("Content-Length shorter than the body", post(SAMPLE, **{"Content-Length": "10"}), 400),
    # -- 422: JSON, but not a valid customer
    Case("NaN", post(dumps(customer(monthlycharges=float("nan")))), 422, [(None, "monthlycharges")]),
    Case("Infinity", post(dumps(customer(totalcharges=float("inf")))), 422, [(None, "totalcharges")]),
    Case("-Infinity", post(dumps(customer(tenure=float("-inf")))), 422, [(None, "tenure")]),
    Case("1e400 overflows to infinity", post(SAMPLE.replace(b"29.85,", b"1e400,", 1)), 422, [(None, "monthlycharges")]),
    Case("400-digit integer", post(dumps(customer(tenure=10**400))), 422, [(None, "tenure")]),
    Case("2**64", post(dumps(customer(seniorcitizen=2**64))), 422, [(None, "seniorcitizen")]),
    Case("1e308", post(dumps(customer(monthlycharges=1e308))), 422, [(None, "monthlycharges")]),
    Case("negative tenure", post(dumps(customer(tenure=-1))), 422, [(None, "tenure")]),
    Case("fractional tenure", post(dumps(customer(tenure=1.5))), 422, [(None, "tenure")]),
    Case("60 kB string", post(dumps(customer(gender="x" * 60_000))), 422, [(None, "gender")]),
    Case("unknown category", post(dumps(customer(contract="forever"))), 422, [(None, "contract")]),
    Case("string for a number", post(dumps(customer(tenure="abc"))), 422, [(None, "tenure")]),
    Case("number for a category", post(dumps(customer(gender=1))), 422, [(None, "gender")]),
    Case("list for a category", post(dumps(customer(contract=["month-to-month"]))), 422, [(None, "contract")]),
    Case("object for a number", post(dumps(customer(monthlycharges={"$gt": 0}))), 422, [(None, "monthlycharges")]),
    Case("null field", post(dumps(customer(gender=None))), 422, [(None, "gender")]),
    Case("every field null", post(dumps(dict.fromkeys(SAMPLE_CUSTOMER))), 422, [(None, f) for f in ALL_FIELDS]),
    Case("empty object", post(b"{}"), 422, [(None, f) for f in ALL_FIELDS]),
    Case(
        "one field missing",
        post(dumps({k: v for k, v in SAMPLE_CUSTOMER.items() if k != "tenure"})),
        422,
        [(None, "tenure")],
    ),
    Case(
        "dataset spelling, bad value",
        post(dumps({**{k: v for k, v in SAMPLE_CUSTOMER.items() if k != "contract"}, "Contract": "Forever"})),
        422,
        [(None, "Contract")],
    ),
    Case("a JSON string", post(b'"hello"'), 422),
    Case("a JSON number", post(b"42"), 422),
    Case("a JSON true", post(b"true"), 422),
    Case("a JSON null", post(b"null"), 422),
    Case("empty batch", post(b"[]"), 422),
    Case("batch of numbers", post(b"[1, 2, 3]"), 422, [(0, None), (1, None), (2, None)]),
    Case("batch inside a batch", post(dumps([[SAMPLE_CUSTOMER]])), 422, [(0, None)]),
    Case("a bad row in a batch", post(bad_batch({3: customer(contract="forever")})), 422, [(3, "contract")]),
    Case(
        "two bad rows in a batch",
        post(bad_batch({0: customer(tenure=None), 5: customer(paymentmethod="cash")})),
        422,
        [(0, "tenure"), (5, "paymentmethod")],
    ),
    # -- 415: not sent as JSON
    Case("text/plain", post(SAMPLE, "text/plain"), 415),
    Case("no content type", post(SAMPLE, None), 415),
    Case("form encoded", post(b"gender=female&tenure=1", "application/x-www-form-urlencoded"), 415),
    Case("multipart", post(b"--b\r\n\r\n" + SAMPLE + b"\r\n--b--\r\n", "multipart/form-data; boundary=b"), 415),
    Case("xml", post(b"<customer/>", "application/xml"), 415),
    Case("garbage content type", post(SAMPLE, ";;;==="), 415),
    # -- 413: too large
    Case("body over the limit", post(SAMPLE + b" " * MAX_BODY), 413),
    Case("Content-Length over the limit, body never sent", post(b"", **{"Content-Length": "99999999"}), 413),
    Case("chunked body over the limit", chunked(SAMPLE + b" " * MAX_BODY), 413),
    Case("chunked body over the limit by one byte", chunked(SAMPLE + b" " * (MAX_BODY + 1 - len(SAMPLE)), 65536), 413),
    Case("one customer too many", post(dumps([SAMPLE_CUSTOMER] * (MAX_CUSTOMERS + 1))), 413),
    # -- 404 / 405: unknown paths and methods
    Case("unknown path", http_request("GET", "/nope"), 404),
    Case("trailing slash", post(SAMPLE).replace(b"/predict ", b"/predict/ ", 1), 404),
    Case("path traversal", http_request("GET", "/../../etc/passwd"), 404),
    Case("encoded NUL in the path", http_request("GET", "/pi%00ng"), 404),
    Case("GET /predict", http_request("GET", "/predict"), 405),
    Case("DELETE /predict", http_request("DELETE", "/predict"), 405),
    Case("PUT /model", http_request("PUT", "/model", SAMPLE, {"Content-Type": "application/json"}), 405),
    Case("made-up method", http_request("BREW", "/predict"), 405),
    Case("TRACE", http_request("TRACE", "/predict"), 405),
]

# Malformed HTTP: gunicorn's parser refuses these before the application runs, so the page is its own HTML.
# 501 for an unknown transfer coding is what RFC 9112 section 6.1 asks of a server.
PROTOCOL_CASES = [
    Case("no request line", b"GARBAGE\r\n\r\n", 400),
    Case("HTTP/0.9", b"GET /ping\r\n\r\n", 400),
    Case("HTTP/2.0 on a plain connection", b"GET /ping HTTP/2.0\r\nHost: x\r\n\r\n", 400),
    Case("lower-case method", b"get /ping HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    Case("NUL in the path", b"GET /pi\x00ng HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    Case("header without a colon", b"GET /ping HTTP/1.1\r\nHost x\r\n\r\n", 400),
    Case("NUL in a header", post(SAMPLE, **{"X-A": "a\x00b"}), 400),
    Case("Content-Length not a number", post(SAMPLE, **{"Content-Length": "abc"}), 400),
    Case("negative Content-Length", post(SAMPLE, **{"Content-Length": "-5"}), 400),
    Case("Content-Length and chunked", post(SAMPLE, **{"Transfer-Encoding": "chunked"}), 400),
    Case(
        "two Content-Lengths", post(SAMPLE).replace(b"Content-Length", b"Content-Length: 5\r\nContent-Length", 1), 400
    ),
    Case("unknown transfer coding", post(SAMPLE, **{"Transfer-Encoding": "foo"}), 501),
    Case("header too long", http_request("GET", "/ping", headers={"X-A": "a" * 9000}), 431),
    Case("too many headers", http_request("GET", "/ping", headers={f"X-{i}": "a" for i in range(200)}), 431),
    Case("URL too long", http_request("GET", "/" + "a" * 5000), 414),
    Case("unknown expectation", post(SAMPLE, Expect="teapot"), 417),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("hostile") / "gunicorn.log"
    env = {"CHURN_MAX_BODY_BYTES": str(MAX_BODY), "CHURN_MAX_CUSTOMERS": str(MAX_CUSTOMERS)}
    with running_server(gunicorn_command(port, workers=2), port, env=env, log_path=log) as (_, process):
        # Ready as soon as one worker answers: wait for the second one to boot too.
        assert wait_for(lambda: len(worker_pids(process.pid)) == 2, timeout=30)
        yield port, process, log, worker_pids(process.pid)


def still_scores(port: int) -> None:
    answer = exchange(port, post(SAMPLE))
    assert answer.status == 200, answer.body
    assert 0 <= answer.json()["churn_probability"] <= 1


def test_the_corpus_is_large_enough():
    assert len(CASES) + len(PROTOCOL_CASES) >= 40 and len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_hostile_request_gets_its_json_4xx(case, server):
    port = server[0]
    answer = exchange(port, case.request, case.method)
    assert answer.status == case.status, answer.body[:500]
    error = answer.json()
    assert isinstance(error["error"], str) and error["error"]
    assert isinstance(error["detail"], list)
    named = {(d.get("index"), d["field"]) for d in error["detail"]}
    for index, name in case.fields:
        assert (index, name) in named, error
        if name:
            assert name in error["error"]
    for detail in error["detail"]:
        assert detail["message"]
        if detail["field"] in ALL_FIELDS:
            assert detail["type"] in ("string", "integer", "number")
            assert "allowed" in detail or "minimum" in detail
    if case.status == 405:
        assert "POST" in answer.headers["Allow"] or "GET" in answer.headers["Allow"]
    still_scores(port)


@pytest.mark.parametrize("case", PROTOCOL_CASES, ids=lambda c: c.name)
def test_malformed_http_is_refused_by_gunicorn(case, server):
    port = server[0]
    answer = exchange(port, case.request, case.method)
    assert answer.status == case.status, answer.body[:500]
    still_scores(port)


def test_odd_but_valid_requests_are_answered(server):
    """Not errors: each is a spelling of a valid request, and gets its prediction."""
    port = server[0]
    odd = [
        post(SAMPLE, "application/json; charset=utf-8"),
        post(SAMPLE, "application/vnd.churn+json"),
        chunked(SAMPLE, 7),
        post(SAMPLE, Expect="100-continue"),
        post(SAMPLE, **{"X-Request-ID": "x" * 5000}),
        post(dumps(customer(customerID="7590-VHVEG", Churn="No", **{"x" * 10_000: 1}))),
        http_request("POST", "/predict?debug=1&x=%ff", SAMPLE, {"Content-Type": "application/json"}),
    ]
    for request in odd:
        answer = exchange(port, request)
        assert answer.status == 200, (request[:200], answer.body[:300])
        assert set(answer.json()) - {"customerID"} == {"prediction_id", "churn_probability", "churn"}


def test_the_server_survived_the_corpus(server):
    """Runs last (file order): the same workers answer, and none logged an error or a traceback."""
    port, process, log, workers = server
    still_scores(port)
    assert process.poll() is None
    assert worker_pids(process.pid) == workers
    text = log.read_text()
    for sign in ("Traceback", "WORKER TIMEOUT", "unhandled error", '"level": "error"'):
        assert sign not in text, f"{sign!r} in the server log:\n{text[-3000:]}"


@pytest.mark.parametrize("client", ["http.client", "urllib"])
def test_python_clients_read_the_413_of_a_body_over_the_default_limit(client, tmp_path):
    """A 20 MB body against the default 16 MiB limit: the service reads and drops the rest before answering, so a
    client that sends its whole body before reading (http.client, urllib) gets the JSON 413, not a broken pipe."""
    import urllib.error
    import urllib.request

    body = b"[" + b" " * (20 * 1024 * 1024) + b"]"
    port = free_port()
    with running_server(gunicorn_command(port), port, log_path=tmp_path / "gunicorn.log"):
        if client == "http.client":
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            status, answer = response.status, json.loads(response.read())
            connection.close()
        else:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/predict", body, {"Content-Type": "application/json"}, method="POST"
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=30)
            status, answer = refused.value.code, json.loads(refused.value.read())
    assert status == 413
    assert answer["error"] == "The body is larger than 16777216 bytes"
