"""churn/serve/drain.py with gunicorn's real worker classes, real sockets and real processes read from /proc.

The whole stop under load, with sync and gthread workers, is in tests/integration/test_load_faults.py.
"""

import importlib
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from gunicorn import glogging
from gunicorn.config import Config
from gunicorn.workers import SUPPORTED_WORKERS

from churn.serve import drain

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the drain reads /proc and uses Linux socket filters")

REQUEST = b"GET /queued HTTP/1.1\r\nHost: test\r\n\r\n"


def hello(environ, start_response):
    body = f"served {environ['PATH_INFO']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def listener():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s


def worker_type(worker_class: str):
    """The class gunicorn would load for worker_class, or None when it needs a package not installed here."""
    module_name, class_name = SUPPORTED_WORKERS[worker_class].rsplit(".", 1)
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, RuntimeError):  # gevent's module raises RuntimeError without gevent
        return None


# gunicorn cannot be given a worker class whose package is missing: every class it can be given here.
INSTALLED_WORKERS = sorted(name for name in SUPPORTED_WORKERS if worker_type(name) is not None)


def test_the_worker_classes_of_this_service_are_installed():
    assert {"sync", "gthread"} <= set(INSTALLED_WORKERS)


def make_worker(worker_class: str, listener: socket.socket):
    """A real gunicorn worker object of that class, in this process, as its worker_exit hook would see it."""
    cls = worker_type(worker_class)
    cfg = Config()
    cfg.set("worker_class", worker_class)
    worker = cls(1, os.getppid(), [listener], None, 30, cfg, glogging.Logger(cfg))
    worker.pid = os.getpid()
    worker.wsgi = hello
    worker.alive = False  # stopping
    return worker


def queued_clients(listener: socket.socket, count: int) -> list[socket.socket]:
    """Clients connected (in the accept queue, not yet accepted) that have sent their request."""
    clients = []
    for _ in range(count):
        client = socket.create_connection(listener.getsockname(), timeout=10)
        client.sendall(REQUEST)
        clients.append(client)
    return clients


def answer(client: socket.socket) -> bytes:
    data = b""
    while chunk := client.recv(65536):
        data += chunk
    client.close()
    return data


def answers(clients: list[socket.socket]):
    """Each client reads its answer in a thread of its own, as real clients do: the server lingers until they
    close (gunicorn's close_graceful)."""
    pool = ThreadPoolExecutor(len(clients))
    futures = [pool.submit(answer, client) for client in clients]
    pool.shutdown(wait=False)
    return lambda: [future.result(timeout=30) for future in futures]


def queue_is_empty(listener: socket.socket) -> bool:
    return not select.select([listener], [], [], 0)[0]


def holder(*fds: int) -> subprocess.Popen:
    """A process that holds these file descriptors (or none) until stopped."""
    return subprocess.Popen(["sleep", "600"], pass_fds=fds)


# ---- Who still listens


def test_a_master_holding_the_socket_still_listens(listener):
    inode = os.fstat(listener.fileno()).st_ino
    master = holder(listener.fileno())
    try:
        assert drain.socket_inodes(master.pid) >= {inode}
        assert drain.master_stopped_listening(master.pid, {inode}) is False
    finally:
        master.kill()
        master.wait()


def test_a_master_without_the_socket_stopped_listening(listener):
    inode = os.fstat(listener.fileno()).st_ino
    master = holder()
    try:
        assert drain.master_stopped_listening(master.pid, {inode}) is True
    finally:
        master.kill()
        master.wait()


# Run as old-master, new-master or worker, holding the listening socket (fd argv[2]) as gunicorn's would.
PROCESS_TREE = """
import os, subprocess, sys, time
role, fd = sys.argv[1], int(sys.argv[2])
me = [sys.executable, __file__]
if role in ("old-master", "new-master"):
    subprocess.Popen([*me, "worker", str(fd)], pass_fds=[fd])
if role == "old-master":
    if sys.argv[3] == "reexec":
        subprocess.Popen([*me, "new-master", str(fd)], pass_fds=[fd])
    os.close(fd)  # the old master has stopped listening
os.write(1, b"ready\\n")  # one write: lines from the four processes never interleave
time.sleep(600)
"""


@pytest.mark.parametrize(("case", "processes", "stopped"), [("plain", 2, True), ("reexec", 4, False)])
def test_workers_holding_it_do_not_count_but_a_reexecuted_master_does(listener, tmp_path, case, processes, stopped):
    """After USR2 the new master is the old one's child, and holds the socket with its own workers."""
    inode = os.fstat(listener.fileno()).st_ino
    script = tmp_path / "tree.py"
    script.write_text(PROCESS_TREE)
    fd = listener.fileno()
    old_master = subprocess.Popen(
        [sys.executable, str(script), "old-master", str(fd), case],
        pass_fds=[fd],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert [old_master.stdout.readline() for _ in range(processes)] == [b"ready\n"] * processes
        assert drain.master_stopped_listening(old_master.pid, {inode}) is stopped
    finally:
        os.killpg(old_master.pid, 9)
        old_master.wait()


def test_an_unknown_master_means_do_nothing(listener):
    inode = os.fstat(listener.fileno()).st_ino
    gone = holder()
    gone.kill()
    gone.wait()
    assert drain.master_stopped_listening(gone.pid, {inode}) is False


def test_proc_that_cannot_be_read_means_do_nothing(listener):
    """Run as another user, /proc/PID/fd of a root process cannot be read: then it is not certain."""
    system_python = shutil.which("python3", path="/usr/bin:/bin")
    if os.geteuid() != 0 or not system_python:
        pytest.skip("needs root, and a Python that another user may run")
    inode = os.fstat(listener.fileno()).st_ino
    master = holder()
    # The module's source on standard input: the other user may not read this checkout.
    check = Path(drain.__file__).read_text() + f"\nprint(master_stopped_listening({master.pid}, {{{inode}}}))\n"
    try:
        runs = {
            user: subprocess.run([system_python, "-"], input=check, capture_output=True, text=True, user=user, cwd="/")
            for user in ("root", "nobody")
        }
    finally:
        master.kill()
        master.wait()
    assert runs["root"].stdout.strip() == "True", runs["root"].stderr
    assert runs["nobody"].stdout.strip() == "False", runs["nobody"].stderr


# ---- The drain, with each worker class


@pytest.fixture
def queue():
    """queue(listener, count): clients waiting in the accept queue, all closed after the test, as are the copies of
    the listening sockets drain.keep_listeners made."""
    made = []

    def make(listener: socket.socket, count: int) -> list[socket.socket]:
        made.extend(queued_clients(listener, count))
        return made[-count:]

    yield make
    for client in made:
        client.close()
    for s in drain._listeners:
        s.close()
    drain._listeners.clear()


@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_queued_connections_are_served_then_new_ones_dropped(listener, queue, worker_class):
    worker = make_worker(worker_class, listener)
    drain.keep_listeners(worker)
    if worker_class == "gthread":
        listener_for_worker = worker.sockets[0]
        listener_for_worker.close()  # as ThreadWorker.run does before worker_exit
    read = answers(queue(listener if worker_class == "sync" else drain._listeners[0], 5))
    drain.drain(worker)  # worker.ppid is this process's parent, which does not hold the socket
    for response in read():
        assert response.startswith(b"HTTP/1.1 200 OK\r\n"), response
        assert response.endswith(b"served /queued")
    # A new connection attempt now is dropped by the filter, so nothing reaches the queue.
    late = socket.socket()
    late.setblocking(False)
    late.connect_ex(drain._listeners[0].getsockname())
    assert queue_is_empty(drain._listeners[0])
    late.close()


def handshake_under_way(listener: socket.socket) -> socket.socket:
    """A client whose connect() has returned while the server still holds it in its SYN queue, as when the
    filter is set while its last ACK is in flight. TCP_DEFER_ACCEPT keeps it there until its first data."""
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 30)
    client = socket.create_connection(listener.getsockname(), timeout=10)
    assert drain.handshakes_under_way(listener.getsockname()[1])
    return client


def test_a_handshake_under_way_when_the_filter_is_set_completes_and_is_served(listener):
    worker = make_worker("sync", listener)
    client = handshake_under_way(listener)
    assert drain.drop_new_connections(listener, worker.log)
    # Its request comes while the queue is served: the ACK it carries must pass the filter, and be waited for.
    threading.Timer(0.2, client.sendall, [REQUEST]).start()
    read = answers([client])
    assert drain.serve_queue(listener, worker.handle) == 1
    assert read()[0].endswith(b"served /queued")
    assert not drain.handshakes_under_way(listener.getsockname()[1])


def test_a_handshake_that_never_completes_holds_the_stop_no_longer_than_the_wait(listener, monkeypatch):
    monkeypatch.setattr(drain, "HANDSHAKE_WAIT_S", 0.2)
    worker = make_worker("sync", listener)
    with handshake_under_way(listener):
        assert drain.drop_new_connections(listener, worker.log)
        started = time.monotonic()
        assert drain.serve_queue(listener, worker.handle) == 0
        assert 0.2 <= time.monotonic() - started < 2


class FilterRefusingSocket(socket.socket):
    """A listener as a podman container has it here: attaching the filter fails with EPERM."""

    def setsockopt(self, level, option, value):
        if option == drain.SO_ATTACH_FILTER:
            raise PermissionError(1, "Operation not permitted")
        super().setsockopt(level, option, value)


def test_a_refused_filter_is_one_warning_and_the_worker_exits_as_gunicorn_makes_it(queue, caplog):
    with FilterRefusingSocket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        worker = make_worker("sync", listener)
        drain.keep_listeners(worker)
        drain._listeners[:] = [listener]  # the dup() of a subclass is a plain socket
        queue(listener, 1)
        with caplog.at_level("WARNING", logger="gunicorn.error"):
            drain.drain(worker)
        assert "cannot hold off new connections (" in caplog.text and "Operation not permitted" in caplog.text
        assert not queue_is_empty(listener)  # left queued, not served with new connections still coming


@pytest.mark.parametrize("worker_class", INSTALLED_WORKERS)
def test_no_worker_class_makes_the_hook_raise(listener, queue, worker_class):
    worker = make_worker(worker_class, listener)
    drain.keep_listeners(worker)
    clients = queue(listener, 2)
    read = answers(clients) if worker_class in ("sync", "gthread") else None
    drain.drain(worker)
    if read:
        assert all(response.endswith(b"served /queued") for response in read())
    else:
        # Not served here: then the socket is left as it was, still taking connections.
        assert not queue_is_empty(listener)


def test_nothing_is_done_when_the_parent_is_not_the_master(listener, queue):
    worker = make_worker("sync", listener)
    worker.ppid = 1 if os.getppid() != 1 else os.getpid()
    drain.keep_listeners(worker)
    queue(listener, 1)
    drain.drain(worker)
    assert not queue_is_empty(listener)  # neither served nor filtered
    extra = socket.create_connection(listener.getsockname(), timeout=10)
    extra.close()


def test_nothing_is_done_in_the_master_for_a_worker_it_found_gone(listener, queue):
    worker = make_worker("sync", listener)
    drain.keep_listeners(worker)
    worker.pid = os.getpid() + 1
    queue(listener, 1)
    drain.drain(worker)
    assert not queue_is_empty(listener)
