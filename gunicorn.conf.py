"""gunicorn settings for `gunicorn predict:app` (read from this file by default). Each can be set by environment."""

import os
import shutil
import sys
import tempfile

bind = f"0.0.0.0:{os.environ.get('PORT', '9696')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# A worker silent this long is killed and replaced; a prediction takes milliseconds.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# On SIGTERM, in-flight requests get this long to finish: under `docker stop`'s 10 s.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "8"))
# Recycle workers now and then (a guard against leaks; the soak test shows none), staggered so they do not all
# restart at once: at full load about every half minute, not every few seconds.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "100000"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "10000"))
# Load the model once in the master; the workers share its memory.
preload_app = True
# Our app writes one JSON line per request; gunicorn's own access log would repeat it.
accesslog = None
# Heartbeat files in memory, not on a container's overlay filesystem.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# gunicorn 27's control socket is unused here; every instance would share ~/.gunicorn/gunicorn.ctl, and
# without a writable home (a container's non-root user) it logs an error at each start.
control_socket_disable = True

# prometheus_client keeps each worker's metrics in files under this folder; it must be set before the
# app (and so prometheus_client) is imported, which is why it is here and not in the app.
_own_metrics_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _own_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="churn-metrics-")


def on_starting(server):
    # Files left by an earlier run would be counted again.
    metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    for name in os.listdir(metrics_dir):
        os.remove(os.path.join(metrics_dir, name))


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


# ---- Graceful stop without resetting queued connections
# On SIGTERM the master closes its copy of the listening socket, but the workers still hold theirs: the kernel
# keeps completing handshakes into the accept queue, and when the last worker exits, every connection still
# queued there is reset. So a worker that finds the master no longer listening first makes the socket drop
# new connection attempts (clients retry, then find the port closed: refused), then serves what is queued.


def _listened_by(pid: int, inodes: set) -> bool:
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and int(target[8:-1]) in inodes:
            return True
    return False


def _drop_new_connections(listener) -> None:
    import ctypes
    import socket

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(SockFilter))]

    drop_all = (SockFilter * 1)(SockFilter(0x06, 0, 0, 0))  # BPF_RET|BPF_K 0: keep nothing of any packet
    so_attach_filter = 26
    listener.setsockopt(socket.SOL_SOCKET, so_attach_filter, bytes(SockFprog(1, drop_all)))


def worker_exit(server, worker):
    # Also called in the master for a worker it found gone; and a worker recycled or replaced by a reload
    # (SIGHUP) leaves a listening master, whose new workers serve the queue.
    if sys.platform != "linux" or worker.pid != os.getpid() or not hasattr(worker, "handle"):
        return
    try:
        if _listened_by(worker.ppid, {os.fstat(s.fileno()).st_ino for s in worker.sockets}):
            return
    except OSError:
        pass
    for listener in worker.sockets:
        _drop_new_connections(listener)
        listener.setblocking(False)
        while True:
            try:
                client, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            client.setblocking(True)
            worker.handle(listener, client, addr)
