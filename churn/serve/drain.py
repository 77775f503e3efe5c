"""A graceful stop that resets no queued connection: gunicorn's post_fork and worker_exit hooks call this.

On SIGTERM gunicorn's master closes its copy of the listening socket, but the workers still hold theirs: the
kernel keeps completing handshakes into the accept queue, and when the last worker exits, every connection
still queued there is reset. So a worker exiting once the master no longer listens first makes the socket
drop new connection attempts (clients retry, then find the port closed: refused), then serves what is queued,
and what joins the queue as the handshakes already under way complete.

The filter sits on the socket that the master and every worker share: it is attached only when /proc shows
for certain that nothing but this master's exiting workers still holds the socket. A worker recycled
(max_requests) or replaced by a reload (SIGHUP) leaves a listening master, and does nothing.
"""

import ctypes
import os
import select
import socket
import sys
import time

# Duplicates of this worker's listening sockets, taken when it starts: the gthread worker closes its own
# before worker_exit runs.
_listeners: list[socket.socket] = []


def keep_listeners(worker) -> None:
    """post_fork hook, in the new worker."""
    _listeners[:] = [listener.dup() for listener in worker.sockets]


def drain(worker) -> None:
    """worker_exit hook: in an exiting worker, serve the queued connections if the master stopped listening.

    gunicorn also calls worker_exit in the master, for a worker it found gone: nothing to do there.
    """
    if sys.platform != "linux" or worker.pid != os.getpid() or not _listeners:
        return
    # With reuse_port each worker has sockets of its own; the master's are others. Not this service's setup.
    if worker.cfg.reuse_port:
        return
    serve = connection_server(worker)
    if serve is None:
        return
    # A changed parent means the master died: what holds the socket then is not known.
    if worker.ppid != os.getppid():
        return
    if not master_stopped_listening(worker.ppid, {os.fstat(s.fileno()).st_ino for s in _listeners}):
        return
    for listener in _listeners:
        if not drop_new_connections(listener, worker.log):
            return
        serve_queue(listener, serve)


def connection_server(worker):
    """serve(listener, client, addr) answering one accepted connection the way this worker class does, or None
    for a class whose connections cannot be served here (those workers exit as gunicorn makes them)."""
    from gunicorn.workers.gthread import TConn, ThreadWorker
    from gunicorn.workers.sync import SyncWorker

    if isinstance(worker, SyncWorker):
        return worker.handle  # handle(listener, client, addr); it closes the client
    if isinstance(worker, ThreadWorker):
        # handle(conn) runs in a pool thread in normal operation; the pool is shut down now, so this thread
        # serves. A stopping worker answers with Connection: close, so each connection is one request.
        def serve(listener, client, addr):
            conn = TConn(worker.cfg, client, addr, listener.getsockname())
            conn.data_ready = True  # read the request as the sync worker does, rather than defer to a poller
            try:
                worker.handle(conn)
            finally:
                conn.close(graceful=True)

        return serve
    return None


def master_stopped_listening(master_pid: int, inodes: set[int]) -> bool:
    """True only when /proc shows that neither the master nor any process under it holds these sockets, other
    than its workers (direct children). A master re-executed by USR2 is a child sharing the sockets with its
    own workers, the master's grandchildren: then False. So is anything /proc cannot tell."""
    try:
        if socket_inodes(master_pid) & inodes:
            return False
        for child in children(master_pid):
            for grandchild in children(child):
                try:
                    if socket_inodes(grandchild) & inodes:
                        return False
                except FileNotFoundError:  # exited since listed: holds nothing
                    continue
    except OSError:
        return False
    return True


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets pid holds; OSError when /proc cannot tell (FileNotFoundError: no such process)."""
    fd_dir = f"/proc/{pid}/fd"
    inodes = set()
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except FileNotFoundError:  # closed since listed
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def children(pid: int) -> set[int]:
    """The child processes of pid, from every process's parent in /proc/*/stat; OSError when /proc cannot tell.

    Not /proc/PID/task/*/children, which the kernel documents as unreliable while the children run."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError):  # exited since listed
            continue
        if parent == pid:
            found.add(int(entry))
    return found


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(SockFilter))]


# A filter on a TCP socket sees each packet from its TCP header, whose byte 13 holds the flags. Only a SYN without
# ACK (a new connection attempt) is dropped: the ACK that ends a handshake the kernel already answered must
# pass, or that client, whose connect() has returned and who has sent its request, is reset when the socket
# closes.
DROP_SYN = (SockFilter * 5)(
    SockFilter(0x30, 0, 0, 13),  # BPF_LD|BPF_B|BPF_ABS: A = the TCP flags
    SockFilter(0x54, 0, 0, 0x12),  # BPF_ALU|BPF_AND|BPF_K: A &= SYN|ACK
    SockFilter(0x15, 0, 1, 0x02),  # BPF_JMP|BPF_JEQ|BPF_K: SYN alone? then the next, else skip it
    SockFilter(0x06, 0, 0, 0),  # BPF_RET|BPF_K 0: drop
    SockFilter(0x06, 0, 0, 0xFFFFFFFF),  # keep the whole packet
)
SO_ATTACH_FILTER = 26
# A SYN that the kernel was taking on another CPU as the filter was set becomes a handshake a moment later.
HANDSHAKE_SETTLE_S = 0.01
# A handshake's last ACK comes a round trip after the SYN-ACK; one lost is answered by the kernel's repeat of
# the SYN-ACK after 1 s. A client that never completes (a SYN flood) does not hold the stop longer than this.
HANDSHAKE_WAIT_S = 2.0
TCP_SYN_RECV = "03"  # the state /proc/net/tcp shows for a handshake under way


def drop_new_connections(listener: socket.socket, log) -> bool:
    """New connection attempts (SYNs) are dropped: the client retries, and is refused once the socket closes.
    False, said in one warning, where the filter is refused (seen in a podman container): the worker then exits
    as gunicorn makes it, without draining its queue."""
    try:
        listener.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(SockFprog(len(DROP_SYN), DROP_SYN)))
    except OSError as e:
        log.warning("churn: this stop cannot hold off new connections (%s): connections still queued may be reset", e)
        return False
    return True


def serve_queue(listener: socket.socket, serve) -> int:
    """Serve every connection waiting in the listener's accept queue, and each handshake under way when the filter
    was set as it completes into the queue; how many were served."""
    listener.setblocking(False)
    port = listener.getsockname()[1]
    start = time.monotonic()
    served = 0
    while True:
        served += serve_accepted(listener, serve)
        waited = time.monotonic() - start
        if (waited >= HANDSHAKE_SETTLE_S and not handshakes_under_way(port)) or waited >= HANDSHAKE_WAIT_S:
            # None can start any more: what completed since the queue was last emptied is the last to serve.
            return served + serve_accepted(listener, serve)
        select.select([listener], [], [], 0.005)


def serve_accepted(listener: socket.socket, serve) -> int:
    """Serve the connections in the listener's accept queue until it is empty; how many were served."""
    served = 0
    while True:
        try:
            client, addr = listener.accept()
        except BlockingIOError:
            return served
        except ConnectionAbortedError:  # the client gave up while queued
            continue
        client.setblocking(True)
        serve(listener, client, addr)
        served += 1


def handshakes_under_way(port: int) -> bool:
    """Whether a connection to this local port is between its SYN and its last ACK: SYN_RECV in /proc/net/tcp (IPv4,
    also to an IPv6 socket) or tcp6."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)  # the header
                for line in f:
                    local, state = line.split(None, 4)[1:4:2]
                    if state == TCP_SYN_RECV and int(local.rsplit(":", 1)[1], 16) == port:
                        return True
        except FileNotFoundError:  # no IPv6 in this kernel
            continue
        except OSError:  # cannot tell: serve what comes for the whole wait
            return True
    return False
