"""Prometheus metrics, correct across gunicorn workers.

prometheus_client decides at import whether values live in per-process files: gunicorn.conf.py sets
PROMETHEUS_MULTIPROC_DIR before the app is imported, and /metrics then aggregates every worker's files.
Without it (waitress, the dev server: one process) the default registry is exposed.

Each worker writes files of its own there. When a worker exits (recycled after max_requests, or killed),
the master folds its counters and histograms into one archive file per type and removes its files, so the
folder, and the time /metrics takes to read it, stays bounded over any number of recycled workers, with
totals unchanged. A lock file orders that against /metrics reading the folder.
"""

import contextlib
import fcntl
import os

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.mmap_dict import MmapedDict

# In multiprocess mode every metric update asks the process ID, to notice a fork: a system call, several per
# request, and system calls are what a request costs most here. The ID is remembered instead, and renewed in
# each forked worker (prometheus_client's documented hook, the one uWSGI setups use for worker IDs).
_pid = os.getpid()


def _remember_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_remember_pid)
if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: _pid)

REQUESTS = Counter("churn_http_requests", "HTTP requests answered", ["method", "endpoint", "status"])
REQUEST_DURATION = Histogram("churn_http_request_duration_seconds", "Time to answer a request", ["endpoint"])
PREDICTIONS = Counter("churn_predictions", "Customers scored")
PROBABILITY = Histogram(
    "churn_probability", "Churn probabilities served (watch for drift)", buckets=[i / 10 for i in range(1, 11)]
)


def observe_probabilities(probabilities: list[float]) -> None:
    """Count a batch into the histogram with one increment per bucket, not one observe per customer.

    This writes the same per-bucket values Histogram.observe would (counts are stored per bucket and
    made cumulative when collected); tests compare the two.
    """
    bounds = PROBABILITY._upper_bounds
    # searchsorted puts NaN past the last bound: the extra slot drops it, as observe's `amount <= bound` does.
    counts = np.bincount(np.searchsorted(bounds, probabilities, side="left"), minlength=len(bounds) + 1)
    for bucket, count in zip(PROBABILITY._buckets, counts[: len(bounds)].tolist(), strict=True):
        if count:
            bucket.inc(count)
    PROBABILITY._sum.inc(float(np.sum(probabilities)))


def exposition() -> tuple[bytes, str]:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        with folder_lock(os.environ["PROMETHEUS_MULTIPROC_DIR"], fcntl.LOCK_SH):
            return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


# Types whose values from several processes add up. This service has no gauges; a live* gauge's files are
# removed by mark_process_dead, as prometheus_client documents.
ADDITIVE_TYPES = ("counter", "histogram", "summary")
LOCK_FILE = "folder.lock"  # not *.db: the collector reads only those


@contextlib.contextmanager
def folder_lock(folder: str, operation: int):
    # Opened on each use: a lock belongs to an open file, which forked processes would otherwise share.
    with open(os.path.join(folder, LOCK_FILE), "a") as lock:
        fcntl.flock(lock, operation)
        yield


def archive_dead_process(pid: int, folder: str) -> None:
    """Fold a dead worker's values into the archive files and remove its files (the master calls this)."""
    multiprocess.mark_process_dead(pid, folder)
    with folder_lock(folder, fcntl.LOCK_EX):
        for kind in ADDITIVE_TYPES:
            dead = os.path.join(folder, f"{kind}_{pid}.db")
            if not os.path.exists(dead):
                continue
            archive = MmapedDict(os.path.join(folder, f"{kind}_archive.db"))
            try:
                for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(dead):
                    archived, _ = archive.read_value(key)
                    archive.write_value(key, archived + value, timestamp)
            finally:
                archive.close()
            os.remove(dead)
