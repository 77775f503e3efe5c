"""The service as Elastic Beanstalk runs it: real nginx, with the platform's nginx.conf (the project's copy,
tests/nginx/eb-default-nginx.conf) and the project's .platform/nginx files, in front of real gunicorn.

nginx runs as the current user from a temporary folder; `make test` installs it (scripts/install_debian.sh).
"""

import http.client
import json
import os
import re
import select
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from churn.settings import Settings
from devtools import PLATFORM_CONF_D, ROOT, free_port, gunicorn_command, running_nginx, running_server, worker_pids
from loadtest import run as loadtest
from tests.helpers import without_ids

pytestmark = pytest.mark.nginx

MAX_BODY_BYTES = Settings().max_body_bytes
JSON = {"Content-Type": "application/json"}
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory):
    """(base URL, its log file): real gunicorn with the project's gunicorn.conf.py."""
    port = free_port()
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    with running_server(gunicorn_command(port), port, log_path=log) as (url, _):
        yield url, log


@pytest.fixture(scope="module")
def service(gunicorn) -> str:
    return gunicorn[0]


@pytest.fixture(scope="module")
def proxy(service, tmp_path_factory):
    with running_nginx(tmp_path_factory.mktemp("nginx"), int(service.rsplit(":", 1)[1])) as running:
        yield running


@pytest.fixture(scope="module")
def customers(raw_df) -> list[dict]:
    """The dataset's rows as customers, in its own spelling, as pandas reads them: a blank TotalCharges stays " "."""
    return raw_df.drop(columns=["Churn"]).to_dict("records")


def one_customer_body(customer: dict, size: int) -> bytes:
    """A batch of one customer, padded with JSON whitespace to exactly `size` bytes."""
    core = json.dumps(customer).encode()
    return b"[" + b" " * (size - len(core) - 2) + core + b"]"


def raw_exchange(port: int, request: bytes) -> http.client.HTTPResponse:
    """Send bytes as they are (no client would send these) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        response = http.client.HTTPResponse(connection)
        response.begin()
        response.body = response.read()
        return response


def assert_json_error(status: int, content_type: str, body: bytes) -> dict:
    assert content_type == "application/json", (status, content_type, body[:300])
    error = json.loads(body)
    assert set(error) == {"error", "detail"} and error["error"] and error["detail"] == [], error
    return error


# ---- What the issue found: a 10,000-customer batch, the README's limit, refused by nginx's 1 MB default


def test_a_batch_of_10000_customers_in_the_datasets_spelling_passes_the_proxy(customers, proxy, service):
    batch = [customers[i % len(customers)] for i in range(10_000)]
    assert any(customer["TotalCharges"] == " " for customer in batch)
    body = json.dumps(batch).encode()
    assert len(body) > 4 * 1024 * 1024  # nginx refuses past 1 MiB by default
    answer = requests.post(f"{proxy.url}/predict", data=body, headers=JSON, timeout=60)
    assert answer.status_code == 200, answer.text[:500]
    answers = answer.json()
    assert len(answers) == 10_000
    assert all(0 <= a["churn_probability"] <= 1 for a in answers)
    # The proxy hands over the service's answer as it is.
    direct = requests.post(f"{service}/predict", data=body, headers=JSON, timeout=60).content
    assert without_ids(answer.content) == without_ids(direct)


def test_a_body_at_the_limit_passes_and_one_byte_more_gets_the_services_413_from_nginx(customers, proxy, client):
    at_limit = one_customer_body(customers[0], MAX_BODY_BYTES)
    answer = requests.post(f"{proxy.url}/predict", data=at_limit, headers=JSON, timeout=60)
    assert answer.status_code == 200, answer.text[:500]
    assert len(answer.json()) == 1

    over = one_customer_body(customers[0], MAX_BODY_BYTES + 1)
    refused = requests.post(f"{proxy.url}/predict", data=over, headers=JSON, timeout=60)
    assert refused.status_code == 413
    assert_json_error(413, refused.headers["Content-Type"], refused.content)
    # nginx refused it from its Content-Length, before any of it reached the service...
    assert f"client intended to send too large body: {MAX_BODY_BYTES + 1} bytes" in proxy.error_log()
    # ...with the very answer the service gives.
    own = client.post("/predict", data=over, content_type="application/json")
    assert own.status_code == 413
    assert refused.json() == own.get_json()


def test_http_client_reads_the_json_413_of_a_20_mb_body(proxy):
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    try:
        connection.request("POST", "/predict", body=b"[" + b" " * 20_000_000 + b"]", headers=JSON)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == 413
    error = assert_json_error(413, response.getheader("Content-Type"), body)
    assert error["error"] == f"The body is larger than {MAX_BODY_BYTES} bytes"


def test_requests_reads_the_json_413_of_a_20_mb_body_with_or_without_content_length(proxy):
    chunk = b" " * (1024 * 1024)
    for body in (b"[" + chunk * 20 + b"]", (chunk for _ in range(20))):  # bytes, then a generator: chunked
        refused = requests.post(f"{proxy.url}/predict", data=body, headers=JSON, timeout=60)
        assert refused.status_code == 413
        assert_json_error(413, refused.headers["Content-Type"], refused.content)


# ---- Request IDs


def test_the_clients_request_id_reaches_the_service_and_comes_back(customers, proxy, gunicorn):
    _, log = gunicorn
    sent = "nginx-test.42:a_b"
    answer = requests.post(f"{proxy.url}/predict", json=customers[0], headers={"X-Request-ID": sent}, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["X-Request-ID"] == sent
    # The service logged the request under the client's ID (its access line may follow the answer by a moment).
    deadline = time.monotonic() + 5
    while f'"request_id":"{sent}"' not in log.read_text():
        assert time.monotonic() < deadline, "the service's log has no line with the client's request ID"
        time.sleep(0.05)


def test_without_a_request_id_one_is_made_and_comes_back(proxy):
    ids = [requests.get(f"{proxy.url}/health/ready", timeout=10).headers["X-Request-ID"] for _ in range(2)]
    assert all(GENERATED_ID.fullmatch(i) for i in ids) and ids[0] != ids[1]


def test_nginx_own_answers_carry_the_request_id(proxy):
    over = b" " * (MAX_BODY_BYTES + 1)
    sent = requests.post(f"{proxy.url}/predict", data=over, headers={**JSON, "X-Request-ID": "mine-1"}, timeout=30)
    assert (sent.status_code, sent.headers["X-Request-ID"]) == (413, "mine-1")
    made = requests.post(f"{proxy.url}/predict", data=over, headers=JSON, timeout=30)
    assert made.status_code == 413 and GENERATED_ID.fullmatch(made.headers["X-Request-ID"])
    # One the service would not accept is replaced, as the service replaces it.
    invalid = requests.post(f"{proxy.url}/predict", data=over, headers={**JSON, "X-Request-ID": "a b"}, timeout=30)
    assert invalid.status_code == 413 and GENERATED_ID.fullmatch(invalid.headers["X-Request-ID"])


# ---- Errors: the service's pass through untouched; nginx's own are JSON


@pytest.mark.parametrize(
    "method, path, body",
    [("GET", "/no-such-endpoint", None), ("POST", "/predict", b"{not json"), ("POST", "/predict", b'{"tenure": -1}')],
)
def test_the_services_own_errors_pass_through_untouched(proxy, service, method, path, body):
    via_proxy = requests.request(method, proxy.url + path, data=body, headers=JSON, timeout=10)
    direct = requests.request(method, service + path, data=body, headers=JSON, timeout=10)
    assert via_proxy.status_code == direct.status_code >= 400
    assert via_proxy.headers["Content-Type"] == direct.headers["Content-Type"]
    assert via_proxy.json() == direct.json()


LONG = "a" * 9000  # past large_client_header_buffers' 8190 bytes


@pytest.mark.parametrize(
    "status, request_bytes",
    [
        (400, b"NOT HTTP AT ALL\r\n\r\n"),
        (400, b"GET /health/ready HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
        (414, f"GET /{LONG} HTTP/1.1\r\nHost: x\r\n\r\n".encode()),
        (431, f"GET /health/ready HTTP/1.1\r\nHost: x\r\nX-Long: {LONG}\r\n\r\n".encode()),
        (405, b"TRACE /health/ready HTTP/1.1\r\nHost: x\r\n\r\n"),
        (501, b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"),
        (505, b"GET /health/ready HTTP/2.5\r\nHost: x\r\n\r\n"),
        (404, b"GET /_proxy_error HTTP/1.1\r\nHost: x\r\n\r\n"),
    ],
    ids=["garbage", "two-lengths", "long-url", "long-header", "trace", "transfer-encoding", "http-version", "internal"],
)
def test_nginx_own_errors_are_json(proxy, status, request_bytes):
    response = raw_exchange(proxy.port, request_bytes)
    assert response.status == status, response.body[:300]
    assert_json_error(status, response.getheader("Content-Type"), response.body)
    assert GENERATED_ID.fullmatch(response.getheader("X-Request-ID", ""))


# ---- What gunicorn refuses itself it answers with an HTML page of its own: nginx refuses it first, in JSON


def request(target: str = "/health/ready", method: str = "GET", headers: tuple[str, ...] = ()) -> bytes:
    """A request as bytes; a str part is sent as UTF-8, so a non-ASCII character is a raw byte on the wire."""
    lines = [f"{method} {target} HTTP/1.1", "Host: x", *headers, "", ""]
    return "\r\n".join(lines).encode()


def gunicorn_refusals(log: Path) -> int:
    """How many requests gunicorn has refused itself (it logs a warning for each)."""
    return log.read_text().count("Invalid request from ip=")


def gunicorn_sees(status: int, request_bytes: bytes, id: str):
    """What nginx cannot see (it counts no headers and checks no header's value), and gunicorn refuses itself: in
    JSON, as gunicorn.conf.py has it write its refusals."""
    return pytest.param(status, request_bytes, id=id)


@pytest.mark.parametrize(
    "status, request_bytes",
    [
        # The four.
        pytest.param(400, request("/caf\u00e9"), id="utf-8-in-path"),
        pytest.param(414, request("/" + "a" * 5000), id="5000-byte-line"),
        gunicorn_sees(431, request(headers=tuple(f"X-Header-{i}: {i}" for i in range(100))), "101-headers"),
        pytest.param(400, request(method="A" * 40), id="40-character-method"),
        # The same limits in other forms.
        pytest.param(400, request("/health/ready?q=caf\u00e9"), id="utf-8-in-query"),
        pytest.param(400, request("http://x/caf\u00e9"), id="utf-8-in-absolute-url"),
        pytest.param(400, request(method="GE"), id="2-character-method"),
        pytest.param(414, "GET /{} HTTP/1.0\r\n\r\n".format("a" * 4085).encode(), id="http-1.0-line"),
        pytest.param(431, request(headers=("X-Long: " + "a" * 8181,)), id="8189-byte-header"),
        # nginx appends ", 127.0.0.1": a client's line of 8178 bytes reaches gunicorn at 8189.
        pytest.param(431, request(headers=("X-Forwarded-For: " + "a" * 8161,)), id="lengthened-forwarded-for"),
        # What only gunicorn can see.
        gunicorn_sees(400, request(headers=("X-Note: a\x01b",)), "control-character-in-header"),
        gunicorn_sees(400, request(headers=("Content-Type: a/b", "Content-Type: c/d")), "two-content-types"),
        # gunicorn trusts scheme headers from loopback (forwarded_allow_ips), where nginx is in this test.
        gunicorn_sees(400, request(headers=("X-Forwarded-Proto: https", "X-Forwarded-Ssl: off")), "two-schemes"),
    ],
)
def test_what_gunicorn_refuses_itself_is_answered_in_json(proxy, status, request_bytes):
    response = raw_exchange(proxy.port, request_bytes)
    assert response.status == status, response.body[:300]
    assert_json_error(status, response.getheader("Content-Type"), response.body)


# Each of gunicorn's limits (its defaults: gunicorn.conf.py sets none), by a request just within it and one just past.
GUNICORN_LIMITS = {
    "request-line": (request("/" + "a" * 4080), request("/" + "a" * 4081), 414),  # 4094 bytes with "GET ", " HTTP/1.1"
    "short-method": (request(method="PUT"), request(method="PU"), 400),
    "long-method": (request(method="A" * 20), request(method="A" * 21), 400),
    "target-byte": (request("/caf%C3%A9"), request("/caf\u00e9"), 400),
    "header-line": (request(headers=("X-Long: " + "a" * 8180,)), request(headers=("X-Long: " + "a" * 8181,)), 431),
}
SENTENCES = {
    "request-line": "The URL is too long: the request line is at most 4094 bytes",
    "short-method": "The method is not valid: it has 3 to 20 characters",
    "long-method": "The method is not valid: it has 3 to 20 characters",
    "target-byte": "The URL is not valid: percent-encode any byte that is not printable ASCII",
    "header-line": "The request headers are too large: at most 8188 bytes a line",
}


@pytest.mark.parametrize("limit", GUNICORN_LIMITS)
def test_nginx_refuses_first_just_what_gunicorn_refuses(proxy, gunicorn, limit):
    service, log = gunicorn
    within, past, status = GUNICORN_LIMITS[limit]
    port = int(service.rsplit(":", 1)[1])
    # gunicorn on its own: it refuses the request past the limit itself; the one within reaches the service.
    direct_past, direct_within = raw_exchange(port, past), raw_exchange(port, within)
    assert direct_past.status == status
    assert direct_within.status != status and direct_within.getheader("Content-Type") == "application/json"

    # Through nginx: the one past the limit is refused by nginx, in JSON, and never reaches gunicorn...
    refused_before = gunicorn_refusals(log)
    response = raw_exchange(proxy.port, past)
    assert response.status == status
    assert assert_json_error(status, response.getheader("Content-Type"), response.body)["error"] == SENTENCES[limit]
    assert GENERATED_ID.fullmatch(response.getheader("X-Request-ID", ""))
    # ...and the one within gets the service's own answer.
    passed = raw_exchange(proxy.port, within)
    assert (passed.status, passed.getheader("Content-Type")) == (direct_within.status, "application/json")
    assert json.loads(passed.body) == json.loads(direct_within.body)
    assert gunicorn_refusals(log) == refused_before


def test_the_forwarded_for_nginx_lengthens_is_refused_only_past_gunicorns_line(proxy):
    within = raw_exchange(proxy.port, request(headers=("X-Forwarded-For: " + "a" * 8160,)))
    assert within.status == 200, within.body[:300]
    past = raw_exchange(proxy.port, request(headers=("X-Forwarded-For: " + "a" * 8161,)))
    assert past.status == 431
    assert_json_error(431, past.getheader("Content-Type"), past.body)


def test_with_gunicorn_stopped_nginx_answers_a_json_502(tmp_path, customers):
    port = free_port()
    with running_nginx(tmp_path, port) as stopped:
        with running_server(gunicorn_command(port), port):
            assert requests.get(f"{stopped.url}/health/ready", timeout=10).status_code == 200
        request_id = {"X-Request-ID": "after-stop"}
        for answer in (
            requests.get(f"{stopped.url}/health/ready", headers=request_id, timeout=10),
            requests.post(f"{stopped.url}/predict", json=customers[0], headers=request_id, timeout=10),
        ):
            assert answer.status_code in (502, 503)
            error = assert_json_error(answer.status_code, answer.headers["Content-Type"], answer.content)
            assert "try again" in error["error"]
            assert answer.headers["X-Request-ID"] == "after-stop"


# ---- Slow clients


def test_sixty_clients_sending_their_bodies_a_byte_at_a_time_do_not_delay_a_normal_request(customers, proxy):
    body = json.dumps(customers[0]).encode()
    head = (
        f"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    slow = [socket.create_connection(("127.0.0.1", proxy.port), timeout=10) for _ in range(60)]
    normal = {}

    def normal_request():
        start = time.perf_counter()
        answer = requests.post(f"{proxy.url}/predict", json=customers[1], timeout=10)
        normal.update(status=answer.status_code, seconds=time.perf_counter() - start)

    try:
        for connection in slow:
            connection.sendall(head)
        # 6 s of one byte per client every 0.1 s; the normal request goes out in the middle of it.
        other = threading.Thread(target=normal_request)
        sent, start = 0, time.monotonic()
        while time.monotonic() - start < 6:
            if sent == 20:
                other.start()
            for connection in slow:
                connection.sendall(body[sent : sent + 1])
            sent += 1
            time.sleep(0.1)
        other.join(timeout=10)
        # Functional, not a benchmark: the bound is generous (a prediction takes milliseconds).
        assert normal.get("status") == 200, normal
        assert normal["seconds"] < 2, normal
        # The slow clients were all still sending: none had an answer yet.
        assert sent < len(body)
        assert select.select(slow, [], [], 0)[0] == []
        for connection in slow:
            connection.sendall(body[sent:])
        statuses = []
        for connection in slow:
            response = http.client.HTTPResponse(connection)
            response.begin()
            response.read()
            statuses.append(response.status)
        assert statuses == [200] * 60
    finally:
        for connection in slow:
            connection.close()


# ---- Timeouts: the configuration's numbers, in the order the comments in churn_server.conf explain


def seconds(value: str) -> int:
    return int(value.removesuffix("s"))


def test_timeouts_are_ordered_gunicorn_then_nginx_then_the_load_balancer():
    server_conf = (PLATFORM_CONF_D / "elasticbeanstalk" / "churn_server.conf").read_text()
    directives = dict(re.findall(r"^\s*(\w+)\s+([^;{]+);", server_conf, re.MULTILINE))
    gunicorn_timeout = Settings().timeout
    # The load balancer's idle timeout: 60 s unless .ebextensions sets aws:elbv2:loadbalancer IdleTimeout.
    idle = 60
    for path in (ROOT / ".ebextensions").glob("*.config"):
        settings = (yaml.safe_load(path.read_text()) or {}).get("option_settings") or {}
        if isinstance(settings, dict):
            idle = int(settings.get("aws:elbv2:loadbalancer", {}).get("IdleTimeout", idle))
    read, send = seconds(directives["proxy_read_timeout"]), seconds(directives["proxy_send_timeout"])
    assert gunicorn_timeout < read < idle and send < idle
    assert seconds(directives["keepalive_timeout"]) > idle


# nginx's keepalive_timeout for idle connections to an upstream, which the platform's `upstream docker` leaves unset.
NGINX_UPSTREAM_KEEPALIVE_S = 60


def test_an_idle_connection_to_gunicorn_is_closed_by_nginx_first(proxy):
    upstream = (proxy.directory / "conf.d" / "elasticbeanstalk-nginx-docker-upstream.conf").read_text()
    assert "keepalive 256;" in upstream and "keepalive_timeout" not in upstream
    assert Settings().keepalive > NGINX_UPSTREAM_KEEPALIVE_S


def connections_to(port: int) -> set[tuple[str, str]]:
    """Every TCP connection to this local port (open, closing or in TIME_WAIT) as (local, remote) addresses."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in list(f)[1:]:
                local, remote, state = line.split()[1:4]
                if int(local.rsplit(":", 1)[1], 16) == port and state != "0A":  # 0A: the listening socket
                    found.add((local, remote))
    return found


def test_nginx_reuses_its_connections_to_gunicorn(proxy, service, customers):
    port = int(service.rsplit(":", 1)[1])
    before = connections_to(port)
    with requests.Session() as client:
        for customer in customers[:100]:
            assert client.post(f"{proxy.url}/predict", json=customer, timeout=10).status_code == 200
    # At most one new connection per nginx worker process (one a CPU), none where earlier tests left one open: not one
    # a request, as sync workers need.
    opened = connections_to(port) - before
    assert len(opened) <= os.cpu_count(), len(opened)


def test_a_killed_worker_loses_at_most_the_answers_it_had_begun(tmp_path):
    """nginx resends, on another connection, what a killed worker had not begun to answer (proxy_next_upstream)."""
    port = free_port()
    with running_server(gunicorn_command(port), port) as (_, master), running_nginx(tmp_path, port) as proxy:
        load = loadtest.Load(proxy.port, concurrency=32, duration=4).start()
        time.sleep(2)
        os.kill(min(worker_pids(master.pid)), signal.SIGKILL)
        outcomes = loadtest.count(load.join())
    assert outcomes["ok"] > 0 and outcomes["refused"] == 0, outcomes
    # Without the retry, every request the worker had taken fails: a dozen or more. A thread answers one at a time.
    assert outcomes["non2xx"] + outcomes["failed"] <= Settings().threads, outcomes


@pytest.mark.parametrize("replaced_by", ["sighup", "recycling"])
def test_workers_replaced_under_load_behind_nginx_fail_no_request(tmp_path, replaced_by):
    """A stopping gthread worker closes the connections nginx keeps to it: none as nginx sends a request on it."""
    port = free_port()
    env = {"GUNICORN_MAX_REQUESTS": "200", "GUNICORN_MAX_REQUESTS_JITTER": "20"} if replaced_by == "recycling" else {}
    with running_server(gunicorn_command(port), port, env=env) as (_, master), running_nginx(tmp_path, port) as proxy:
        before = worker_pids(master.pid)
        load = loadtest.Load(proxy.port, concurrency=16, duration=4).start()
        if replaced_by == "sighup":
            time.sleep(1.5)
            master.send_signal(signal.SIGHUP)
        outcomes = loadtest.count(load.join())
        assert not worker_pids(master.pid) & before
    assert outcomes["ok"] == outcomes["requests"] > 0, outcomes


def test_through_the_proxy_redirects_stay_relative_and_pages_unframed(proxy):
    docs = raw_exchange(proxy.port, b"GET /docs HTTP/1.1\r\nHost: evil.example\r\nX-Forwarded-Proto: https\r\n\r\n")
    assert docs.status == 308
    assert docs.getheader("Location") == "/docs/"
    assert docs.getheader("X-Content-Type-Options") == "nosniff"
    page = raw_exchange(proxy.port, b"GET /docs/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert page.status == 200 and page.getheader("X-Frame-Options") == "DENY"
