"""gunicorn's gthread worker, taking new connections in turn with its siblings (`gunicorn.conf.py`'s `gthread`).

A gthread worker keeps every connection it accepts until the client closes it (nginx keeps its upstream ones for
1,000 requests or a minute idle), and of the workers woken by a new connection the first to call accept() wins.
wrk's 8 connections landed all on one of two workers in 1 run of 12, and 7/1 in 3 more: one core then idled and
the throughput halved. Here each worker publishes how many connections it holds in memory that all workers share,
and one holding more than an accepting sibling leaves new connections to that sibling until it holds as many, or for
50 ms at most (a sibling stuck, killed or gone costs a new connection that wait, never the connection).

A kept-alive connection whose next request has wholly arrived is answered on the poller's own thread rather than
handed to the thread pool: the hand-off (a future, a queue, a pipe write to wake the poller, the interpreter lock
passed between threads: 29 futex calls a request, as `perf stat` counts them); a one-customer request of this
service took 485 µs of server CPU with it and 403 µs without, in two runs of `make bench` (docs/speed.md). Only a
request that cannot make the poller wait is answered so: its bytes all in the socket's buffer with nothing behind
them, and every answer sent before already taken by the client. Reading it and sending its answer each have
SEND_SECONDS at most, so a client that stops reading mid-answer is cut off rather than waited for. Everything else
(a new connection, a request still arriving, a large or chunked one, pipelined ones, TLS) goes to the pool as
before, where a slow client holds a thread, not the worker.
"""

import fcntl
import mmap
import os
import re
import selectors
import socket
import struct
import termios
import time
from concurrent import futures

from gunicorn.workers.gthread import ThreadWorker

# How long a busier worker leaves a new connection to a less busy sibling: a sibling whose threads hold its
# interpreter lock answers its poller within the interpreter's switch interval (5 ms), one the scheduler keeps waiting
# on a loaded machine within tens of milliseconds.
DEFER_SECONDS = 0.05
# Workers beyond this many share no board and accept as plain gthread workers do.
SLOTS = 64
# How often a worker leaving connections to a sibling looks again whether the sibling has caught up.
RECHECK_SECONDS = 0.001
# Published by a worker that does not accept (stopping, or at worker_connections): never the least busy.
NOT_ACCEPTING = 2**31 - 1
# A request up to this size, wholly arrived, is answered on the poller's thread; a larger one costs far more than the
# hand-off.
INLINE_BYTES = 16 * 1024
# How long reading a request, or sending an answer, may take on the poller's thread: a client that reads what it is
# sent takes microseconds.
SEND_SECONDS = 1.0
HEAD_END = b"\r\n\r\n"
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:([^\r\n]*)(?=\r\n)", re.IGNORECASE)
TRANSFER_ENCODING = re.compile(rb"\r\ntransfer-encoding[ \t]*:", re.IGNORECASE)


def one_whole_request(peeked: bytes) -> bool:
    """Whether these bytes are exactly one whole HTTP/1 request with a Content-Length body (or none): reading it then
    never waits on the client. A chunked body, or bytes behind the request, say no."""
    end = peeked.find(HEAD_END)
    if end < 0:
        return False
    head = peeked[: end + 2]
    if TRANSFER_ENCODING.search(head):
        return False
    lengths = [value.strip(b" \t") for value in CONTENT_LENGTH.findall(head)]
    if len(lengths) > 1 or (lengths and not (lengths[0].isdigit() and len(lengths[0]) <= 9)):
        return False  # gunicorn refuses it or reads on: whatever it does, it does on a pool thread
    return len(peeked) == end + len(HEAD_END) + (int(lengths[0]) if lengths else 0)


def peek(sock: socket.socket) -> bytes:
    try:
        return sock.recv(INLINE_BYTES + 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:
        return b""


def unsent(sock: socket.socket) -> int:
    """Bytes sent on the connection that its client has not yet received (Linux's SIOCOUTQ)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]


class DeadlineSocket(socket.socket):
    """A connection served on the poller's thread. gthread makes it blocking to serve it; here each read, and each
    answer sent as a whole (socket.sendall's timeout), then has SEND_SECONDS at most."""

    __slots__ = ()

    def setblocking(self, flag: bool) -> None:
        self.settimeout(SEND_SECONDS if flag else 0.0)


class Board:
    """Each worker's pid and connection count, in anonymous shared memory made before the workers fork."""

    def __init__(self, slots: int = SLOTS):
        self._memory = mmap.mmap(-1, slots * 8)
        self._cells = memoryview(self._memory).cast("i")  # pid, connections; pid 0 for a free slot

    def claim(self, holder: int) -> int | None:
        """A free slot, or a dead worker's, now held by holder; None when every slot holds a live process. Not safe
        for two claims at once: gunicorn's master makes them all, one worker at a time."""
        for slot in range(len(self._cells) // 2):
            pid = self._cells[2 * slot]
            if pid == 0 or not alive(pid):
                self._cells[2 * slot] = holder
                self._cells[2 * slot + 1] = NOT_ACCEPTING
                return slot
        return None

    def hand(self, slot: int, pid: int) -> None:
        """The slot's holder is now pid (the worker the master claimed it for)."""
        self._cells[2 * slot] = pid

    def release(self, slot: int) -> None:
        self._cells[2 * slot + 1] = NOT_ACCEPTING
        self._cells[2 * slot] = 0

    def publish(self, slot: int, connections: int) -> None:
        self._cells[2 * slot + 1] = connections

    def fewest_elsewhere(self, slot: int) -> int:
        """The fewest connections an accepting live sibling holds (NOT_ACCEPTING when there is none)."""
        fewest = NOT_ACCEPTING
        pids, counts = self._cells[::2].tolist(), self._cells[1::2].tolist()
        for other, (pid, connections) in enumerate(zip(pids, counts, strict=True)):
            if other != slot and pid and connections < fewest and alive(pid):
                fewest = connections
        return fewest


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user took the pid
        return False
    return True


# Imported by gunicorn's master to find the worker class, so the workers it forks share this one.
BOARD = Board()


class BalancedThreadWorker(ThreadWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # In the master, which makes each worker before forking it: held by the master until the worker takes it.
        self.slot = BOARD.claim(os.getpid())
        self.deferred_until = None  # set while the listeners are left to the siblings

    def init_process(self):
        if self.slot is not None:
            BOARD.hand(self.slot, os.getpid())
        try:
            super().init_process()
        finally:
            if self.slot is not None:
                BOARD.release(self.slot)

    def set_accept_enabled(self, enabled):
        if self.deferred_until is not None:  # the listeners are already off the poller
            self.deferred_until, self._accepting = None, False
        super().set_accept_enabled(enabled)
        self.publish()

    def wait_for_and_dispatch_events(self, timeout):
        if self.deferred_until is not None:
            left = self.deferred_until - time.monotonic()
            if left <= 0 or not self.busier_than_a_sibling():  # time's up, or the sibling caught up
                self.take_what_siblings_left()
            else:
                timeout = min(timeout, left, RECHECK_SECONDS)
        self.publish()  # connections closed since the last turn of the loop
        super().wait_for_and_dispatch_events(timeout)

    def accept(self, listener):
        if self.deferred_until is not None:  # another listener's readiness, from the poll that deferred
            return
        if self.busier_than_a_sibling():
            # Off the poller meanwhile, rather than declining each readiness: this worker's threads keep its
            # interpreter lock.
            for each in self.sockets:
                self.poller.unregister(each)
            self.deferred_until = time.monotonic() + DEFER_SECONDS
            return
        super().accept(listener)
        self.publish()

    def on_client_socket_readable(self, conn, client):
        # A TLS connection (gunicorn's --certfile) is an ssl.SSLSocket: what the socket holds is not yet the request,
        # so it goes to the pool as gthread sends it.
        plain = type(client) is socket.socket
        if not plain or conn.is_http2 or unsent(client) or not one_whole_request(peek(client)):
            return super().on_client_socket_readable(conn, client)
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        client.__class__ = DeadlineSocket
        try:
            answered = futures.Future()
            answered.set_result(self.handle(conn))
        finally:
            client.__class__ = socket.socket
        self.finish_request(conn, answered)

    def finish_request(self, conn, fs):
        if fs.cancelled() or fs.exception() is not None or fs.result():
            return super().finish_request(conn, fs)
        # A connection ending after its answer is closed gracefully: gunicorn waits up to 2 s for the client's end to
        # close (util.close_graceful). On the poller's thread every other connection of the worker would wait too.
        self.nr_conns -= 1
        try:
            self.tpool.submit(conn.close, True)
        except RuntimeError:  # the pool is shut down: the worker is exiting
            conn.close(graceful=True)

    def busier_than_a_sibling(self) -> bool:
        return self.slot is not None and self.nr_conns > 0 and self.nr_conns > BOARD.fewest_elsewhere(self.slot)

    def take_what_siblings_left(self):
        self.deferred_until = None
        for listener in self.sockets:
            self.poller.register(listener, selectors.EVENT_READ, self.accept)
            super().accept(listener)  # a connection still queued; EAGAIN, ignored, when a sibling took it
        self.publish()

    def publish(self):
        if self.slot is not None:
            BOARD.publish(self.slot, self.nr_conns if self._accepting else NOT_ACCEPTING)
