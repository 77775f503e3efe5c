"""A WSGI app that answers in each shape PEP 3333 allows, by path: tests/integration/test_worker_servers.py serves it
with the project's worker and with plain gthread, and compares what a client receives."""

import json
import os
import threading


def environ_seen(environ) -> bytes:
    """The environ's text values and the body, as JSON; the ports are the connection's own, and differ."""
    seen = {key: value for key, value in environ.items() if isinstance(value, str) and not key.endswith("_PORT")}
    seen["body"] = environ["wsgi.input"].read().decode("latin-1")
    return json.dumps(seen, sort_keys=True).encode()


def sized(body: bytes, *extra) -> list[tuple[str, str]]:
    return [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *extra]


def app(environ, start_response):
    path, body = environ["PATH_INFO"], environ_seen(environ)
    # Which thread answered, and whether gunicorn's own environ was built: not compared, but read by the test.
    where = (("X-Thread", threading.current_thread().name), ("X-Early-Hints", str("wsgi.early_hints" in environ)))
    where += (("X-Worker", str(os.getpid())),)
    if path == "/streamed":
        start_response("200 OK", sized(body + body, *where))
        return iter([body, body])
    if path == "/unsized":
        start_response("200 OK", [("Content-Type", "application/json"), *where])
        return [body]
    if path == "/no-content":
        start_response("204 No Content", list(where))
        return [body]
    if path == "/written":
        start_response("200 OK", sized(body, *where))(body)
        return []
    if path == "/started-late":
        return started_late(start_response, body, where)
    if path == "/failing-midway":
        start_response("200 OK", [("Content-Type", "application/json"), *where])
        return failing_midway(body)
    if path == "/failing":
        raise RuntimeError("a failing app")
    if path == "/failing-on-close":
        start_response("200 OK", sized(body, *where))
        return FailingOnClose([body])
    if path == "/bad-header":
        start_response("200 OK", sized(body, ("X-Bad", "a\r\nX-Injected: b")))
        return [body]
    if path == "/hop-by-hop":
        start_response("200 OK", sized(body, ("Connection", "close"), *where))
        return [body]
    start_response("200 OK", sized(body, *where))
    return [body]


def started_late(start_response, body, where):
    start_response("200 OK", sized(body, *where))
    yield body


def failing_midway(body):
    yield body
    raise RuntimeError("a failing app, its answer started")


class FailingOnClose(list):
    """A body whose close() fails, once the server has sent all of it."""

    def close(self):
        raise RuntimeError("a failing app, its answer sent")
