"""A graceful stop that resets no queued connection: gunicorn's post_fork and worker_exit hooks call this.

On SIGTERM gunicorn's master closes its copy of the listening socket, but the workers still hold theirs: the
kernel keeps completing handshakes into the accept queue, and when the last worker exits, every connection
still queued there is reset. So a worker exiting once the master no longer listens first makes the socket
drop new connection attempts (clients retry, then find the port closed: refused), then serves what is queued.

The drop-all filter sits on the socket that the master and every worker share: it is attached only when
/proc shows for certain that nothing but this master's exiting workers still holds the socket. A worker
recycled (max_requests) or replaced by a reload (SIGHUP) leaves a listening master, and does nothing.
"""

import ctypes
import os
import socket
import sys

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
        drop_new_connections(listener)
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


DROP_ALL = (SockFilter * 1)(SockFilter(0x06, 0, 0, 0))  # BPF_RET|BPF_K 0: keep nothing of any packet
SO_ATTACH_FILTER = 26


def drop_new_connections(listener: socket.socket) -> None:
    """New connection attempts (SYNs) are dropped: the client retries, and is refused once the socket closes."""
    listener.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(SockFprog(1, DROP_ALL)))


def serve_queue(listener: socket.socket, serve) -> int:
    """Serve every connection waiting in the listener's accept queue; how many were served."""
    listener.setblocking(False)
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
