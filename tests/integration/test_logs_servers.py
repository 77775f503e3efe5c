"""Request IDs and the JSON log lines under real gunicorn and waitress and on a shared pipe: one whole JSON line
per request, each carrying its request's ID."""

import json
import os
import re
import select
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from urllib.parse import unquote

import pytest
import requests

from churn import logs
from churn.model.schema import SAMPLE_CUSTOMER
from devtools import free_port, gunicorn_command, running_server
from tests.helpers import customers

ACCESS_FIELDS = {"time", "level", "logger", "message", "request_id", "method", "path", "status", "duration_ms"}
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


REQUESTS = [
    # method, path, request options, status, customers
    ("GET", "/ping", {}, 200, 0),
    ("GET", "/health/live", {}, 200, 0),
    ("GET", "/health/ready", {}, 200, 0),
    ("GET", "/model", {}, 200, 0),
    ("GET", "/metrics", {}, 200, 0),
    ("GET", "/openapi.json", {}, 200, 0),
    ("GET", "/docs", {"allow_redirects": False}, 308, 0),
    ("GET", "/docs/", {}, 200, 0),
    ("GET", "/docs/swagger-ui.css", {}, 200, 0),
    ("POST", "/predict", {"json": SAMPLE_CUSTOMER}, 200, 1),
    ("POST", "/predict", {"json": customers(3)}, 200, 3),
    ("POST", "/predict", {"data": b"{", "headers": {"Content-Type": "application/json"}}, 400, 0),
    ("POST", "/predict", {"json": customers(6)}, 413, 0),
    ("POST", "/predict", {"data": json.dumps(SAMPLE_CUSTOMER)}, 415, 0),
    ("POST", "/predict", {"json": dict(SAMPLE_CUSTOMER, tenure=-1)}, 422, 0),
    ("GET", "/nowhere", {}, 404, 0),
    ("GET", "/predict", {}, 405, 0),
]


def call(server, method: str, path: str, options: dict, request_id: str | None) -> requests.Response:
    options = dict(options, headers=dict(options.get("headers", {})))
    if request_id is not None:
        options["headers"]["X-Request-ID"] = request_id
    return requests.request(method, f"{server.url}{path}", timeout=10, **options)


def test_every_response_has_a_request_id_and_one_json_log_line(server):
    answered = []  # (request ID, method, path, status, customers)
    for n, (method, path, options, status, count) in enumerate(REQUESTS):
        sent = f"op-{server.kind}-{n}.{time.time_ns()}"
        for request_id in (sent, None):
            response = call(server, method, path, options, request_id)
            assert response.status_code == status, (path, response.text)
            returned = response.headers["X-Request-ID"]
            assert returned == sent if request_id else GENERATED_ID.fullmatch(returned), (path, returned)
            answered.append((returned, method, path, status, count))
    assert len({a[0] for a in answered}) == len(answered), "generated request IDs repeat"

    lines = server.access_lines([a[0] for a in answered])
    now = datetime.now(UTC)
    for request_id, method, path, status, count in answered:
        assert len(lines[request_id]) == 1, f"{method} {path}: {lines[request_id]}"
        entry = lines[request_id][0]
        assert ACCESS_FIELDS <= entry.keys()
        assert (entry["method"], entry["path"], entry["status"], entry["customers"]) == (method, path, status, count)
        assert isinstance(entry["duration_ms"], float) and 0 <= entry["duration_ms"] < 10_000
        logged = datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert abs((now - logged).total_seconds()) < 120


@pytest.mark.parametrize("request_id", ["", "has space", "x" * 129, "semi;colon", "ünï", "a\tb"])
def test_an_unusable_request_id_is_replaced(server, request_id):
    response = call(server, "GET", "/ping", {}, request_id)
    generated = response.headers["X-Request-ID"]
    assert GENERATED_ID.fullmatch(generated)
    assert server.access_lines([generated])[generated][0]["path"] == "/ping"


@pytest.mark.parametrize("request_id", ["x" * 128, "A.b_c:d-1"])
def test_a_usable_request_id_is_kept(server, request_id):
    assert call(server, "GET", "/ping", {}, request_id).headers["X-Request-ID"] == request_id


def test_log_lines_stay_json_for_odd_paths(server):
    raw = '/nowhere/%22quoted%22%0Aline%5C{"x":1}'
    response = call(server, "GET", raw, {}, f"odd-{time.time_ns()}")
    assert response.status_code == 404
    rid = response.headers["X-Request-ID"]
    assert server.access_lines([rid])[rid][0]["path"] == unquote(raw)


def test_concurrent_requests_each_get_one_whole_line(server):
    bodies = [c if i % 2 else [c, c] for i, c in enumerate(customers(64))]
    ids = [f"conc-{server.kind}-{i}-{time.time_ns()}" for i in range(len(bodies))]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(lambda b, i: call(server, "POST", "/predict", {"json": b}, i).status_code, bodies, ids)
        )
    assert set(statuses) == {200}
    lines = server.access_lines(ids)  # each line of the file parses as JSON
    assert [len(lines[i]) for i in ids] == [1] * len(ids)
    assert [lines[i][0]["customers"] for i in ids] == [2 if n % 2 == 0 else 1 for n in range(len(ids))]


def test_access_lines_stay_whole_on_a_shared_pipe_whatever_the_path(tmp_path):
    """A path of 1,360 %FF is 8 KB in a JSON line (each byte escaped as \\u00ff). A pipe write over PIPE_BUF is
    not atomic: once the pipe is full, it is split, and the other worker's lines land inside it. The capped
    line fits one write. The reader here is slow on purpose, so that the pipe fills up."""
    fifo = tmp_path / "stdout"
    os.mkfifo(fifo)
    received = bytearray()

    def read_slowly():
        with open(fifo, "rb") as pipe:
            while chunk := pipe.read1(4096):
                received.extend(chunk)
                time.sleep(0.002)

    reader = threading.Thread(target=read_slowly)
    reader.start()
    long_path = "/" + "%FF" * 1360
    port = free_port()
    (tmp_path / "metrics").mkdir()
    command = [*gunicorn_command(port), "--error-logfile", str(tmp_path / "gunicorn.log")]
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    sent = []  # (request ID, path)
    with running_server(command, port, env=env, log_path=fifo) as (url, _):

        def send(n: int) -> int:
            path = long_path if n % 2 else "/predict"
            request_id = f"pipe-{n}"
            sent.append((request_id, path))
            if n % 2:
                return requests.get(f"{url}{path}", headers={"X-Request-ID": request_id}, timeout=30).status_code
            return requests.post(f"{url}{path}", json=SAMPLE_CUSTOMER, headers={"X-Request-ID": request_id}).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(send, range(1200)))
        assert set(statuses) == {200, 404}
    reader.join(timeout=60)
    lines = [json.loads(line) for line in received.decode().splitlines()]  # a split line would not parse
    logged = {entry["request_id"]: entry for entry in lines if entry.get("request_id", "").startswith("pipe-")}
    assert len(logged) == len(sent)
    for request_id, path in sent:
        entry = logged[request_id]
        if path == long_path:
            assert entry["truncated"] is True
            assert entry["path"] == unquote(long_path, encoding="latin-1")[: logs.MAX_LOGGED_PATH]
        else:
            assert "truncated" not in entry and entry["path"] == path
    assert max(len(line) + 1 for line in received.decode().splitlines()) <= select.PIPE_BUF
