"""churn/serve/worker.py in a real gunicorn: connections kept open spread evenly over the workers."""

import contextlib
import http.client
import itertools
import json
import socket
import ssl
import subprocess
import sys
import time

import pytest
import requests

from churn.model.schema import SAMPLE_CUSTOMER
from churn.serve.drain import socket_inodes
from devtools import ROOT, free_port, gunicorn_command, running_server, stop, wait_for, worker_pids

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads who holds which connection from /proc")

TCP_ESTABLISHED = "01"
REQUEST = b"GET /health/ready HTTP/1.1\r\nHost: test\r\n\r\n"
REQUEST_OPENAPI = b"GET /openapi.json HTTP/1.1\r\nHost: test\r\n\r\n"  # a long answer


def established(port: int) -> set[int]:
    """The inodes of the server's ends of the established connections to this local port."""
    inodes = set()
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[3] == TCP_ESTABLISHED and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(int(fields[9]))
    return inodes


def connections_per_worker(master_pid: int, port: int) -> list[int]:
    connections = established(port)
    return sorted(len(socket_inodes(pid) & connections) for pid in worker_pids(master_pid))


def received(client: socket.socket) -> bytes:
    data = client.recv(65536)
    if not data:
        raise ConnectionError("the server closed the connection mid-answer")
    return data


def answer_of(client: socket.socket) -> bytes:
    """One whole answer (headers and a Content-Length body) read from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += received(client)
    head, _, body = data.partition(b"\r\n\r\n")
    lengths = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    length = int(lengths[0])
    while len(body) < length:
        body += received(client)
    assert head.startswith(b"HTTP/1.1 200"), head
    return body


def kept_alive(port: int) -> socket.socket:
    """A connection that has had one answer and stays open, as nginx's upstream ones do."""
    client = socket.create_connection(("127.0.0.1", port), timeout=10)  # a test fails rather than hangs
    client.sendall(REQUEST)
    answer_of(client)
    return client


def open_until_every_worker_serves(master_pid: int, port: int, workers: int) -> None:
    """Both workers in their accept loops: a new connection reaches a worker that booted later, too."""
    clients = []
    try:

        def every_worker_serves():
            clients.append(kept_alive(port))
            counts = connections_per_worker(master_pid, port)
            return len(counts) == workers and 0 not in counts

        assert wait_for(every_worker_serves, 30), "a worker never took a connection"
    finally:
        for client in clients:
            client.close()
    assert wait_for(lambda: not established(port), 10)


@pytest.mark.parametrize("opened", ["one after the other", "all at once"])
def test_connections_kept_open_spread_evenly_over_the_workers(opened):
    port = free_port()
    with running_server(gunicorn_command(port, workers=2), port, {"GUNICORN_THREADS": "2"}) as (_, server):
        open_until_every_worker_serves(server.pid, port, 2)
        if opened == "all at once":
            clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
            for client in clients:
                client.sendall(REQUEST)
            assert all(client.recv(65536).startswith(b"HTTP/1.1 200") for client in clients)
        else:
            clients = [kept_alive(port) for _ in range(8)]
        try:
            time.sleep(0.2)  # each worker publishes what it holds on its next turn of the loop
            assert connections_per_worker(server.pid, port) == [4, 4]
        finally:
            for client in clients:
                client.close()


def test_a_worker_with_two_listeners_leaves_both_to_a_sibling():
    """Connections arriving at once on two bound ports: a busier worker takes both listeners off its poller once."""
    port, second = free_port(), free_port()
    command = [*gunicorn_command(port, workers=2), "--bind", f"127.0.0.1:{second}"]
    with running_server(command, port, {"GUNICORN_THREADS": "2"}) as (_, server):
        assert wait_for(lambda: len(worker_pids(server.pid)) == 2, 10)
        workers = worker_pids(server.pid)
        for _ in range(20):
            clients = [socket.create_connection(("127.0.0.1", p)) for _ in range(8) for p in (port, second)]
            for client in clients:
                client.sendall(REQUEST)
            assert all(client.recv(65536).startswith(b"HTTP/1.1 200") for client in clients)
            for client in clients:
                client.close()
        assert worker_pids(server.pid) == workers, "a worker died and was replaced"


def answered_in_turn(client: socket.socket, requests: int) -> float:
    """The longest wait for an answer over requests sent one after the other on a kept-alive connection."""
    longest = 0.0
    for _ in range(requests):
        start = time.perf_counter()
        client.sendall(REQUEST)
        answer_of(client)
        longest = max(longest, time.perf_counter() - start)
    return longest


@pytest.fixture
def one_worker():
    """One worker of two threads: a poller that waited on one client would make every other one wait."""
    port = free_port()
    with running_server(gunicorn_command(port, workers=1), port, {"GUNICORN_THREADS": "2"}) as (_, server):
        yield port, server


def test_requests_still_arriving_hold_threads_and_the_worker_answers_its_other_connections(one_worker):
    """Both of the worker's threads wait on clients sending half a request; a kept-alive connection whose request has
    wholly arrived is answered anyway, by the poller (plain gthread queues it behind them)."""
    port, _ = one_worker
    slow, other = [kept_alive(port), kept_alive(port)], kept_alive(port)
    body = json.dumps(SAMPLE_CUSTOMER).encode()
    head = b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
    try:
        slow[0].sendall(head[:30])  # half a head
        slow[1].sendall(head % len(body) + b"\r\n" + body[:5])  # the head, not the body
        time.sleep(0.2)  # the poller has seen both readable
        assert answered_in_turn(other, 20) < 0.5
        slow[0].sendall(head[30:] % len(body) + b"\r\n" + body)
        slow[1].sendall(body[5:])
        assert all(b"churn_probability" in answer_of(client) for client in slow)
    finally:
        for client in [*slow, other]:
            client.close()


def unsent_to(client: socket.socket, port: int) -> int:
    """What the server's end of this connection holds that the client has not taken (/proc/net/tcp's tx_queue)."""
    local = f"{client.getsockname()[1]:04X}"
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[2].endswith(f":{local}"):
                return int(fields[4].split(":")[0], 16)
    raise AssertionError("no such connection")


def test_a_client_that_stops_reading_makes_no_other_wait(one_worker):
    """Once a client has answers it has not taken, its requests go to the pool: the poller never waits on it."""
    port, server = one_worker
    workers = worker_pids(server.pid)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # its window is full after the first answer
    stalled.connect(("127.0.0.1", port))
    stalled.sendall(REQUEST_OPENAPI)
    answer_of(stalled)
    other = kept_alive(port)
    try:
        for _ in range(100):  # one at a time, none pipelined: each arrives alone, as the poller answers them
            stalled.sendall(REQUEST_OPENAPI)  # 33 KB answers
            assert answered_in_turn(other, 1) < 1.0
            time.sleep(0.01)
        assert unsent_to(stalled, port) > 1_000_000, "the client took its answers after all"
        assert answered_in_turn(other, 20) < 1.0
    finally:
        stalled.close()
        other.close()
    assert worker_pids(server.pid) == workers, "the worker was killed and replaced"


@pytest.mark.parametrize("kept_alive_first", [False, True], ids=["new connection", "kept-alive connection"])
def test_a_client_that_asks_for_close_but_keeps_its_end_open_makes_no_other_wait(one_worker, kept_alive_first):
    """gunicorn closes such a connection gracefully: it waits up to 2 s for the client's end to close (RFC 9112 9.6)."""
    port, _ = one_worker
    other = kept_alive(port)
    lingering = []
    try:
        for _ in range(5):
            client = kept_alive(port) if kept_alive_first else socket.create_connection(("127.0.0.1", port))
            lingering.append(client)
            client.sendall(REQUEST.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
            answer_of(client)
            assert answered_in_turn(other, 3) < 1.0
    finally:
        for client in [*lingering, other]:
            client.close()


def test_a_tls_connection_kept_alive_is_served_as_gthread_serves_it(tmp_path):
    """gunicorn's own TLS (--certfile): the worker answers such a connection's requests on the pool's threads."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    port = free_port()
    command = [*gunicorn_command(port, workers=1), "--certfile", str(cert), "--keyfile", str(key)]
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        def ready():
            try:
                return requests.get(f"https://127.0.0.1:{port}/health/ready", verify=str(cert), timeout=1).ok
            except requests.ConnectionError:
                return False

        assert wait_for(ready, 30), "gunicorn with TLS never answered"
        workers = worker_pids(server.pid)
        with context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10)) as client:
            assert answered_in_turn(client, 20) < 1.0  # the same connection throughout
        assert worker_pids(server.pid) == workers
    finally:
        stop(server)


SHAPES = ["/plain", "/plain?a=1&b=%20c", "/pl%61in", "/streamed", "/unsized", "/no-content", "/written"]
SHAPES += ["/started-late", "/failing", "/failing-midway", "/failing-on-close", "/bad-header", "/hop-by-hop"]
WHERE = ("Date", "X-Thread", "X-Early-Hints", "X-Worker")  # the answer's time, and where it was made


@contextlib.contextmanager
def shapes_servers(*flags: str):
    """tests/answer_shapes.py under the project's worker and under plain gthread, one worker of 2 threads each."""
    ours, plain = free_port(), free_port()
    app, env = "tests.answer_shapes:app", {"GUNICORN_THREADS": "2"}
    with (
        running_server([*gunicorn_command(ours, 1, app), *flags], ours, env),
        running_server([*gunicorn_command(plain, 1, app), *flags, "--worker-class", "gthread"], plain, env),
    ):
        yield ours, plain


def answers(port: int, path: str, times: int, first: str | None = None) -> list[tuple]:
    """What a client receives asking path times (after first, when given) over one kept-alive connection, each
    request in one send, until an answer closes it, or the server does: status, reason, fields in order and body; and
    where each was made."""
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    request = b"POST %s HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n"
    received = []
    try:
        for asked in [first] * bool(first) + [path] * times:
            client.sendall(request % asked.encode() + b'{"tenure": 12}')
            answer = http.client.HTTPResponse(client, method="POST")
            try:
                answer.begin()
            except http.client.RemoteDisconnected:  # closed after an answer that said keep-alive
                received.append(("closed", {}))
                break
            fields = [(name, value) for name, value in answer.getheaders() if name not in WHERE]
            try:
                body = answer.read()
            except http.client.IncompleteRead as e:  # an answer cut off: the app failed after it began
                received.append(((answer.status, answer.reason, fields, f"cut off after {e.partial!r}"), {}))
                break
            received.append(((answer.status, answer.reason, fields, body), dict(answer.getheaders())))
            if answer.will_close:
                break
    finally:
        client.close()
    return received


def test_every_answer_shape_reaches_the_client_as_plain_gthread_sends_it():
    """The worker answers plain requests on its poller without gunicorn's request objects (churn.serve.plainhttp):
    a client receives the same status, fields in their order and body from it as from plain gthread, for every shape
    of answer."""
    with shapes_servers() as (ours, plain):
        # After a first request, which a new connection's pool thread answers, each shape is a kept-alive one's.
        for path, first in itertools.product(SHAPES, [None, "/plain"]):
            our_answers, plain_answers = answers(ours, path, 3, first), answers(plain, path, 3, first)
            assert [seen for seen, _ in our_answers] == [seen for seen, _ in plain_answers], (first, path)
        kept_alive_answers = [where for _, where in answers(ours, "/plain", 3)[1:]]
        assert all(where["X-Thread"] == "MainThread" for where in kept_alive_answers), "not answered on the poller"
        assert all(where["X-Early-Hints"] == "False" for where in kept_alive_answers), "gunicorn's environ was built"


def test_max_requests_closes_the_connection_and_recycles_the_worker_as_plain_gthread_does():
    """At its 4th request (readiness probes included) a worker answers with Connection: close and is replaced."""
    with shapes_servers("--max-requests", "4", "--max-requests-jitter", "0") as (ours, plain):
        received = {port: answers(port, "/plain", 10) for port in (ours, plain)}
        assert all(len(answered) <= 4 for answered in received.values()), "a connection outlived max_requests"
        assert all(answered[-1][1]["Connection"] == "close" for answered in received.values())
        workers = {where["X-Worker"] for _, where in received[ours]}
        assert wait_for(lambda: answers(ours, "/plain", 1)[0][1]["X-Worker"] not in workers, 30), "never recycled"
