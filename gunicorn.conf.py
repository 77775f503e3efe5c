"""gunicorn settings for `gunicorn predict:app` (read from this file by default); the values are churn.settings'."""

import atexit
import os
import shutil
import sys
import tempfile

import gunicorn.util

from churn.errors import write_gunicorn_refusal
from churn.settings import GUNICORN_WORKER_CLASSES, SettingError, Settings

try:
    settings = Settings.from_env()
except SettingError as e:  # one line, as predict.py says it, rather than gunicorn's traceback of this file
    sys.exit(f"churn: SettingError: {e}")
bind = f"0.0.0.0:{settings.port}"
workers = settings.workers
# gthread: a connection stays open between requests, so nginx's upstream keepalive (Elastic Beanstalk's `keepalive 256`)
# reuses it instead of connecting for every request, which is most of what a sync worker spends on a small request.
# Its threads also let a slow client (straight at gunicorn, as on Cloud Run) hold a thread, not a whole worker.
worker_class = GUNICORN_WORKER_CLASSES[settings.worker_class]
# gunicorn turns a sync worker given more than one thread into a gthread one.
threads = settings.threads if settings.worker_class == "gthread" else 1
# Longer than nginx's upstream keepalive_timeout (60 s): an idle connection is closed by nginx, never by gunicorn just
# as nginx sends a request on it (which nginx would answer with a 502).
keepalive = settings.keepalive
# A worker silent this long is killed and replaced; a prediction takes milliseconds.
timeout = settings.timeout
# On SIGTERM, in-flight requests get this long to finish: under `docker stop`'s 10 s.
graceful_timeout = settings.graceful_timeout
# Recycle workers now and then (a guard against leaks; the soak test shows none), staggered so they do not all
# restart at once: at full load about every half minute, not every few seconds.
max_requests = settings.max_requests
max_requests_jitter = settings.max_requests_jitter
# Load the model once in the master; the workers share its memory.
preload_app = True
# Our app writes one JSON line per request; gunicorn's own access log would repeat it.
accesslog = None
# Heartbeat files in memory, not on a container's overlay filesystem.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# gunicorn 27's control socket is unused here; every instance would share ~/.gunicorn/gunicorn.ctl, and
# without a writable home (a container's non-root user) it logs an error at each start.
control_socket_disable = True

# gunicorn maps a SCRIPT_NAME header from a peer it trusts (forwarded_allow_ips: loopback by default, so
# a proxy on the same host, or any local client) into the WSGI environ, and answers a path outside it with
# an HTML 500. Nothing here is mounted under a prefix: such headers are dropped like any underscore header.
forwarder_headers = ""

# What gunicorn refuses itself, before the app sees it, is answered in the service's JSON error shape, not HTML.
gunicorn.util.write_error = write_gunicorn_refusal

# prometheus_client keeps each worker's metrics in files under this folder; it must be set before the
# app (and so prometheus_client) is imported, which is why it is here and not in the app.
if settings.metrics_dir is None:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="churn-metrics-")
    _master_pid = os.getpid()

    # atexit, not on_exit: a start that fails (a bad model file) never reaches on_exit. Forked workers run
    # atexit handlers too: only this process removes the folder.
    @atexit.register
    def _remove_own_metrics_dir():
        if os.getpid() == _master_pid:
            shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def on_starting(server):
    from churn.metrics import clear_folder

    clear_folder(os.environ["PROMETHEUS_MULTIPROC_DIR"])


def on_reload(server):
    # SIGHUP: the preloaded app is not imported again, so the new model is loaded here, in the master, before the new
    # workers fork from it (churn/serve/reload.py). Without preload_app, each new worker imports it anew.
    from churn.serve.reload import reload_model

    if server.app.callable is not None:
        reload_model(server.app.callable)


def pre_fork(server, worker):
    from churn.metrics import choose_slot

    choose_slot(worker, server.WORKERS.values())


def post_fork(server, worker):
    from churn.metrics import take_slot
    from churn.serve.drain import keep_listeners

    take_slot(worker)
    # A stop (SIGTERM) that resets no queued connection: see churn/serve/drain.py.
    keep_listeners(worker)


def worker_exit(server, worker):
    from churn.monitor.live import flush as flush_drift_counts
    from churn.monitor.predictionlog import flush_all
    from churn.serve.drain import drain

    drain(worker)
    # What the worker answered is counted and logged before it goes (SIGTERM, SIGHUP and recycling all end here):
    # the drift counts of its last second, and the prediction log's queue.
    flush_drift_counts()
    flush_all()
