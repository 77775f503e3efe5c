"""churn/serve/worker.py's board of connection counts, with real processes (the server test is
tests/integration/test_worker_servers.py)."""

import os
import socket
import subprocess
import sys
import time

import pytest

from churn.serve.worker import NOT_ACCEPTING, SEND_SECONDS, Board, DeadlineSocket, one_whole_request, unsent


@pytest.fixture
def sibling():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_worker_sees_the_fewest_connections_an_accepting_sibling_holds(sibling):
    board = Board(slots=4)
    own, other = board.claim(os.getpid()), board.claim(sibling)
    assert own != other
    assert board.fewest_elsewhere(own) == NOT_ACCEPTING  # a sibling not yet accepting
    board.publish(other, 3)
    board.publish(own, 1)
    assert board.fewest_elsewhere(own) == 3
    assert board.fewest_elsewhere(other) == 1


def test_a_dead_workers_count_is_ignored_and_its_slot_taken_again(sibling):
    board = Board(slots=2)
    own, gone = board.claim(os.getpid()), board.claim(dead_pid())
    board.publish(gone, 0)
    assert board.fewest_elsewhere(own) == NOT_ACCEPTING
    assert board.claim(sibling) == gone


def test_a_released_slot_is_free_and_a_full_board_gives_none(sibling):
    board = Board(slots=1)
    own = board.claim(os.getpid())
    assert board.claim(sibling) is None  # that worker accepts as a plain gthread one
    board.release(own)
    assert board.claim(sibling) == own


def test_a_slot_the_master_claims_is_handed_to_its_worker(sibling):
    board = Board(slots=2)
    slot = board.claim(os.getpid())  # as gunicorn's master, before the fork
    other = board.claim(os.getpid())
    board.publish(other, 0)
    assert board.claim(sibling) is None  # held by a live master: not free
    board.hand(slot, sibling)
    board.publish(slot, 2)
    assert board.fewest_elsewhere(other) == 2


HEAD = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize(
    "peeked, whole",
    [
        (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (HEAD + b"Content-Length: 2\r\n\r\n{}", True),
        (HEAD + b"content-length:2\r\n\r\n{}", True),  # names are case-insensitive, the space optional
        (HEAD + b"Content-Length: 3\r\n\r\n{}", False),  # the body still arriving
        (HEAD + b"Content-Length: 2\r\n", False),  # the head still arriving
        (HEAD + b"Content-Length: 2\r\n\r\n{}GET / HTTP/1.1\r\n\r\n", False),  # pipelined: the pool's
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", False),
        (HEAD + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}", False),
        (HEAD + b"X-Content-Length: 5\r\n\r\n", True),  # another header's name, no body
        (HEAD + b"Content-Length: 99999999999\r\n\r\n", False),  # gunicorn would wait for its body
        (HEAD + b"Content-Length: 2x\r\n\r\n{}", False),
        (HEAD + b"Content-Length:\r\n 2\r\n\r\n{}", False),  # a folded line
        (b"", False),
    ],
)
def test_a_request_is_answered_on_the_poller_only_when_wholly_arrived(peeked, whole):
    assert one_whole_request(peeked) is whole


def test_a_deadline_socket_gives_up_on_a_client_that_reads_nothing():
    server, client = socket.socketpair()
    try:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        server.__class__ = DeadlineSocket
        server.setblocking(True)  # as gthread's handle() does
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            server.sendall(b"x" * 10_000_000)
        assert SEND_SECONDS <= time.monotonic() - start < SEND_SECONDS + 1
        server.setblocking(False)  # as gthread's finish_request() does
        assert server.gettimeout() == 0.0
    finally:
        server.close()
        client.close()


def test_unsent_counts_what_the_peer_has_not_taken():
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    served, _ = listener.accept()
    try:
        assert unsent(served) == 0
        served.setblocking(False)
        sent = 0
        try:
            while sent < 10_000_000:
                sent += served.send(b"x" * 65536)
        except BlockingIOError:  # the client's window and the server's buffer are full
            pass
        assert unsent(served) > 0
    finally:
        for each in (served, client, listener):
            each.close()
