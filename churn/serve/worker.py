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

Such a request, when it is a plain POST, is also read without gunicorn's Request, wsgi.create() and Response, and
its plain answer sent in one send (churn.serve.plainhttp, which says what plain is): behind EB's nginx a one-customer
request went from 641 to 371 µs of server CPU, nginx's included, in two runs of `make bench` (docs/speed.md). The
worker then does what gthread's handle_request does around the app: counting the request towards max_requests,
closing the connection when the worker stops, logging an app's error and answering it with a 500.
"""

import contextlib
import fcntl
import itertools
import mmap
import os
import re
import selectors
import socket
import struct
import termios
import time
from concurrent import futures

from gunicorn import util
from gunicorn.http.wsgi import Response
from gunicorn.workers.gthread import ThreadWorker

from churn.serve import plainhttp

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


def send_some(sock: socket.socket, data: bytes) -> int:
    """What a non-blocking send takes of data (all of an answer, when nothing sent before is left unsent)."""
    try:
        return sock.send(data)
    except BlockingIOError:
        return 0


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
        self.plain = plainhttp.PlainRequests(self.cfg, self.log.access_log_enabled)
        self.date = (0, "")  # the second, and its Date field

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
        request = peek(client) if plain and not conn.is_http2 and not unsent(client) else b""
        if not one_whole_request(request):
            return super().on_client_socket_readable(conn, client)
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        # Nothing is buffered before the bytes peeked: gthread hands a connection whose parser read ahead to the pool.
        environ = self.plain.environ(request, client, conn.client, conn.server)
        client.__class__ = DeadlineSocket
        try:
            answered = futures.Future()
            plain = environ is not None
            answered.set_result(self.answer_plain(conn, environ, len(request)) if plain else self.handle(conn))
        finally:
            client.__class__ = socket.socket
        self.finish_request(conn, answered)

    def answer_plain(self, conn, environ: dict, size: int) -> bool:
        """A plain request (churn.serve.plainhttp) answered as gthread's handle_request would, the answer in one send
        when it is plain too; whether the connection stays open."""
        conn.sock.recv(size)  # the request, all of it peeked, already in the environ
        close = self.count_request()
        started, written = [], []
        answered = False  # once it is, an error (the body's close) closes the connection, as gthread does: no 500

        def start_response(status, headers, exc_info=None):
            started[:] = status, headers  # nothing is sent before the app returns: an error's answer replaces it
            return written.append

        try:
            body = self.wsgi(environ, start_response)
            try:
                data = None if written or not started else plainhttp.answer(*started, body, close, self.http_date())
                if data is None:
                    keep = self.answer_with_gunicorn(conn.sock, started, written, body, close)
                else:
                    keep, sent = not close, send_some(conn.sock, data)
                    if sent < len(data):
                        conn.sock.setblocking(True)  # SEND_SECONDS for the rest
                        conn.sock.sendall(data[sent:])
                answered = True
            finally:
                if hasattr(body, "close"):
                    body.close()
        except OSError as e:
            self.log.debug("Ignoring socket error on a kept-alive connection: %s", e)
            return False
        except Exception:
            self.log.exception("Error handling request %s %s", environ["REQUEST_METHOD"], environ["RAW_URI"])
            if not answered:
                with contextlib.suppress(OSError):
                    util.write_error(conn.sock, 500, "Internal Server Error", "")
            return False
        return keep

    def answer_with_gunicorn(self, sock, started: list, written: list, body, close: bool) -> bool:
        """An answer that is not plain, written by gunicorn's Response as gthread writes it."""
        sock.setblocking(True)  # SEND_SECONDS a write
        response = Response(plainhttp.POST, sock, self.cfg)
        if close:
            response.force_close()
        try:
            for chunk in itertools.chain(written, body):  # a generator calls start_response as it starts
                if response.status is None:
                    response.start_response(*started)
                response.write(chunk)
            if response.status is None:
                response.start_response(*started)
            response.close()
        except Exception:
            if not response.headers_sent:
                raise  # answered with a 500
            self.log.exception("Error handling request")  # after part of the answer: the connection is closed
            return False
        return not response.should_close()

    def count_request(self) -> bool:
        """gthread's count of requests towards max_requests; whether this one's connection is then closed."""
        self.nr += 1
        if self.nr >= self.max_requests:
            if self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            return True
        return not self.alive or not self.cfg.keepalive or len(self.keepalived_conns) >= self.max_keepalived

    def http_date(self) -> str:
        second = int(time.time())
        if self.date[0] != second:
            self.date = second, util.http_date(second)
        return self.date[1]

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
