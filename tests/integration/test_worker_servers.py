"""churn/serve/worker.py in a real gunicorn: connections kept open spread evenly over the workers."""

import socket
import sys
import time

import pytest

from churn.serve.drain import socket_inodes
from devtools import free_port, gunicorn_command, running_server, wait_for, worker_pids

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads who holds which connection from /proc")

TCP_ESTABLISHED = "01"
REQUEST = b"GET /health/ready HTTP/1.1\r\nHost: test\r\n\r\n"


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


def kept_alive(port: int) -> socket.socket:
    """A connection that has had one answer and stays open, as nginx's upstream ones do."""
    client = socket.create_connection(("127.0.0.1", port))
    client.sendall(REQUEST)
    assert client.recv(65536).startswith(b"HTTP/1.1 200")
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
