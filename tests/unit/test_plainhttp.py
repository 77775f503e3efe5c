"""churn/serve/plainhttp.py against gunicorn's own Request, wsgi.create() and Response, request by request."""

import io
from types import SimpleNamespace

import pytest
from gunicorn import util
from gunicorn.config import Config
from gunicorn.http.message import Request
from gunicorn.http.unreader import IterUnreader
from gunicorn.http.wsgi import FileWrapper, Response, create

from churn.serve import plainhttp

CLIENT, SERVER = ("127.0.0.1", 50123), ("127.0.0.1", 9696)
BODY = b'{"tenure": 12}'
HEAD = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:9696\r\nContent-Type: application/json\r\n"
SAMPLE = HEAD + b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
OBJECTS = ("wsgi.input", "wsgi.errors", "gunicorn.socket")  # objects of their own in each environ


def post(fields: bytes, target: bytes = b"/predict", body: bytes = BODY) -> bytes:
    return b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s" % (target, fields, len(body), body)


PLAIN = {
    "the sample": SAMPLE,
    "a query": post(b"Host: a\r\n", b"/predict?threshold=0.5&x=%20y"),
    "percent-encoded path": post(b"Host: a\r\n", b"/pre%64ict/%2F"),
    "a path of two slashes": post(b"Host: a\r\n", b"//predict"),
    "whitespace around values": post(b"Host:a\r\nX-Request-ID: \t abc \t\r\nUser-Agent:  wrk  x\r\n"),
    "an empty value": post(b"Host: a\r\nX-Empty:\r\nX-Blank:   \r\n"),
    "no host": post(b"Content-Type: application/json\r\n"),
    "EB nginx's fields": post(
        b"Connection: upgrade\r\nHost: a\r\nX-Real-IP: 10.1.2.3\r\nX-Forwarded-For: 10.1.2.3\r\n"
    ),
    "keep-alive asked": post(b"Host: a\r\nConnection: keep-alive\r\n"),
    "an API key": post(b"Host: a\r\nAuthorization: Bearer k3y\r\nX-API-Key: k3y\r\n"),
    "no body": post(b"Host: a\r\n", body=b""),
    "no Content-Length": b"POST /predict HTTP/1.1\r\nHost: a\r\n\r\n",
    "lower-case names": post(b"host: a\r\ncontent-type: application/json\r\nx-request-id: r\r\n"),
}
NOT_PLAIN = {
    "GET": b"GET /predict HTTP/1.1\r\nHost: a\r\n\r\n",
    "HEAD": b"HEAD /predict HTTP/1.1\r\nHost: a\r\n\r\n",
    "a lower-case method": SAMPLE.replace(b"POST", b"post", 1),
    "HTTP/1.0": SAMPLE.replace(b"HTTP/1.1", b"HTTP/1.0", 1),
    "two spaces": SAMPLE.replace(b"POST ", b"POST  ", 1),
    "absolute form": SAMPLE.replace(b"/predict", b"http://a/predict", 1),
    "a fragment": SAMPLE.replace(b"/predict", b"/predict#x", 1),
    "a byte beyond ASCII in the target": SAMPLE.replace(b"/predict", b"/pr\xe9dict", 1),
    "an underscore in a name": post(b"Host: a\r\nX_Forwarded_For: 1.2.3.4\r\n"),
    "a folded line": post(b"Host: a\r\nX-A: b\r\n  c\r\n"),
    "no colon": post(b"Host: a\r\nX-A b\r\n"),
    "space before the colon": post(b"Host : a\r\n"),
    "Expect": post(b"Host: a\r\nExpect: 100-continue\r\n"),
    "Upgrade": post(b"Host: a\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n"),
    "chunked": b"POST /predict HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "Connection: close": post(b"Host: a\r\nConnection: close\r\n"),
    "a secure-scheme field": post(b"Host: a\r\nX-Forwarded-Proto: https\r\n"),
    "a field twice": post(b"Host: a\r\nX-A: 1\r\nX-A: 2\r\n"),
    "Content-Type twice": post(b"Host: a\r\nContent-Type: a/b\r\nContent-Type: c/d\r\n"),
    "a byte beyond ASCII in a value": post(b"Host: a\r\nX-A: caf\xe9\r\n"),
    "a control byte in a value": post(b"Host: a\r\nX-A: a\x01b\r\n"),
    "a request line over the limit": post(b"Host: a\r\n", b"/" + b"a" * 4100),
    "fields over the limit": post(b"".join(b"X-%d: 1\r\n" % i for i in range(101))),
    "a field over the limit": post(b"Host: a\r\nX-A: " + b"a" * 8200 + b"\r\n"),
}


def gunicorn_environ(request: bytes, cfg: Config) -> dict:
    """What gthread gives the app for this request: gunicorn's Request and wsgi.create()."""
    parsed = Request(cfg, IterUnreader([request]), CLIENT, 1)
    _, environ = create(parsed, None, CLIENT, SERVER, cfg)
    environ["wsgi.multithread"] = True  # as gthread sets it
    return environ


def comparable(environ: dict) -> dict:
    kept = {key: value for key, value in environ.items() if key not in OBJECTS and key != "wsgi.early_hints"}
    return kept | {"body": environ["wsgi.input"].read()}


@pytest.mark.parametrize("request_bytes", PLAIN.values(), ids=PLAIN.keys())
def test_a_plain_request_has_the_environ_gunicorn_gives_it(request_bytes):
    cfg = Config()
    ours = plainhttp.PlainRequests(cfg, access_log=False).environ(request_bytes, None, CLIENT, SERVER)
    assert ours is not None
    assert comparable(ours) == comparable(gunicorn_environ(request_bytes, cfg))


@pytest.mark.parametrize("request_bytes", NOT_PLAIN.values(), ids=NOT_PLAIN.keys())
def test_any_other_request_is_left_to_gunicorn(request_bytes):
    assert plainhttp.PlainRequests(Config(), access_log=False).environ(request_bytes, None, CLIENT, SERVER) is None


def test_a_secure_scheme_field_from_a_peer_gunicorn_does_not_trust_is_a_field_like_any_other():
    """Cloud Run's front end sends X-Forwarded-Proto from an address outside forwarded_allow_ips (loopback)."""
    cfg, front_end = Config(), ("169.254.1.1", 40000)
    request = post(b"Host: a\r\nX-Forwarded-Proto: https\r\nX-Cloud-Trace-Context: 105445aa7843bc8bf206b/1;o=1\r\n")
    ours = plainhttp.PlainRequests(cfg, access_log=False).environ(request, None, front_end, SERVER)
    assert ours is not None
    parsed = Request(cfg, IterUnreader([request]), front_end, 1)
    _, theirs = create(parsed, None, front_end, SERVER, cfg)
    assert comparable(ours) == comparable(theirs | {"wsgi.multithread": True})
    assert ours["wsgi.url_scheme"] == "http"


def test_a_unix_socket_a_proxy_protocol_an_access_log_or_a_script_name_leaves_every_request_to_gunicorn(monkeypatch):
    cfg = Config()
    assert plainhttp.PlainRequests(cfg, access_log=False).environ(SAMPLE, None, "/tmp/churn.sock", "unix") is None
    assert plainhttp.PlainRequests(cfg, access_log=True).environ(SAMPLE, None, CLIENT, SERVER) is None
    cfg.set("proxy_protocol", "v1")
    assert plainhttp.PlainRequests(cfg, access_log=False).environ(SAMPLE, None, CLIENT, SERVER) is None
    monkeypatch.setenv("SCRIPT_NAME", "/churn")
    assert plainhttp.PlainRequests(Config(), access_log=False).environ(SAMPLE, None, CLIENT, SERVER) is None


def test_a_pre_request_hook_leaves_every_request_to_gunicorn():
    cfg = Config()
    cfg.set("pre_request", lambda worker, req: None)
    assert plainhttp.PlainRequests(cfg, access_log=False).environ(SAMPLE, None, CLIENT, SERVER) is None


JSON = ("Content-Type", "application/json")
PLAIN_ANSWERS = {
    "200": ("200 OK", [JSON, ("Content-Length", "2")], [b"{}"]),
    "422": ("422 Unprocessable Entity", [("Content-Length", "2"), JSON], [b"{}"]),
    "no reason": ("200", [("Content-Length", "2")], [b"{}"]),
    "chunks": ("200 OK", [JSON, ("Content-Length", "7")], [b"{", b"", b'"a":1', b"}"]),
    "empty": ("200 OK", [("Content-Length", "0")], []),
    "whitespace around values": ("200 OK", [("Content-Length", " 2\t"), ("X-A", "\tb ")], (b"{}",)),
    "a value beyond ASCII": ("200 OK", [("Content-Length", "2"), ("X-A", "caf\xe9")], [b"{}"]),
}
NOT_PLAIN_ANSWERS = {
    "no Content-Length": ("200 OK", [JSON], [b"{}"]),
    "a shorter Content-Length": ("200 OK", [("Content-Length", "1")], [b"{}"]),
    "a longer Content-Length": ("200 OK", [("Content-Length", "3")], [b"{}"]),
    "a Content-Length with a leading zero": ("200 OK", [("Content-Length", "02")], [b"{}"]),
    "Connection": ("200 OK", [("Content-Length", "2"), ("Connection", "close")], [b"{}"]),
    "Transfer-Encoding": ("200 OK", [("Content-Length", "2"), ("Transfer-Encoding", "chunked")], [b"{}"]),
    "an invalid name": ("200 OK", [("Content-Length", "2"), ("X A", "b")], [b"{}"]),
    "a line break in a value": ("200 OK", [("Content-Length", "2"), ("X-A", "b\r\nX-B: c")], [b"{}"]),
    "a value of bytes": ("200 OK", [("Content-Length", b"2")], [b"{}"]),
    "204": ("204 No Content", [], []),
    "304": ("304 Not Modified", [("Content-Length", "0")], []),
    "an invalid status": ("2000 OK", [("Content-Length", "2")], [b"{}"]),
    "a generator": ("200 OK", [("Content-Length", "2")], (chunk for chunk in [b"{}"])),
    "a chunk of text": ("200 OK", [("Content-Length", "2")], ["{}"]),
    "a file": ("200 OK", [("Content-Length", "2")], FileWrapper(io.BytesIO(b"{}"))),
}


@pytest.mark.parametrize("close", [False, True], ids=["kept alive", "closing"])
@pytest.mark.parametrize(("status", "headers", "body"), PLAIN_ANSWERS.values(), ids=PLAIN_ANSWERS.keys())
def test_a_plain_answer_is_the_bytes_gunicorn_sends(status, headers, body, close, monkeypatch):
    monkeypatch.setattr(util, "http_date", lambda timestamp=None: "Sun, 06 Dec 2026 19:00:00 GMT")
    sent = []  # what gunicorn's Response sends its socket
    response = Response(plainhttp.POST, SimpleNamespace(sendall=sent.append), Config())
    if close:
        response.force_close()
    response.start_response(status, list(headers))
    for chunk in body:
        response.write(chunk)
    response.close()
    assert plainhttp.answer(status, headers, body, close, util.http_date()) == b"".join(sent)


@pytest.mark.parametrize(("status", "headers", "body"), NOT_PLAIN_ANSWERS.values(), ids=NOT_PLAIN_ANSWERS.keys())
def test_any_other_answer_is_left_to_gunicorn(status, headers, body):
    assert plainhttp.answer(status, headers, body, False, "a date") is None
