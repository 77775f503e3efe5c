"""Prometheus metrics behind a façade, on prometheus_client's public API, correct across gunicorn workers.

The rest of the service calls observe_request(), observe_scores() and exposition(), and gunicorn.conf.py the
worker hooks: which library keeps the numbers is this module's business alone.

prometheus_client decides at import whether values live in per-process files: gunicorn.conf.py sets
PROMETHEUS_MULTIPROC_DIR before the app is imported, and /metrics then sums every worker's files. Without it
(waitress, the dev server: one process) the default registry is exposed.

Each worker writes its files under a slot number rather than its pid (prometheus_client's documented
process_identifier hook, the one uWSGI setups use for worker ids): a worker that replaces a recycled or killed one
takes a free slot and carries on from that slot's values, since prometheus_client reads a file's values when it
opens it. So totals survive any number of recycled workers, and the folder, and the time /metrics takes to read
it, stays bounded by the most workers that ever run at once.
"""

import bisect
import os

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

from churn.settings import Settings

_metrics_dir = Settings.one_from_env("metrics_dir")
# Until a worker takes a slot, a process writes under its pid, as prometheus_client does by default. The identifier
# is remembered rather than asked of the system on every update (a system call per metric update).
_identity = str(os.getpid())


def _forked() -> None:
    global _identity
    _identity = str(os.getpid())


os.register_at_fork(after_in_child=_forked)
if _metrics_dir is not None:
    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: _identity)

REQUESTS = Counter("churn_http_requests", "HTTP requests answered", ["method", "endpoint", "status"])
REQUEST_DURATION = Histogram("churn_http_request_duration_seconds", "Time to answer a request", ["endpoint"])
PREDICTIONS = Counter("churn_predictions", "Customers scored")
LOG_LINES_DROPPED = Counter("churn_log_lines_dropped", "Access lines that could not be written (a full disk)")
# Counts per bin, not a Histogram: a batch adds each bin's count in one increment (public API), where a Histogram
# would take one observe per customer.
PROBABILITY_EDGES = np.linspace(0, 1, 11)
PROBABILITY_BINS = [
    f"{low:.1f}-{high:.1f}" for low, high in zip(PROBABILITY_EDGES, PROBABILITY_EDGES[1:], strict=False)
]
PROBABILITY = Counter(
    "churn_probability_customers",
    "Customers served by churn probability, in tenths (the last bin holds 1.0); watch the shares drift",
    ["bin"],
)
_probability_bins = [PROBABILITY.labels(name) for name in PROBABILITY_BINS]
_request_series = {}  # (method, endpoint, status) -> its metric children, looked up once


def observe_request(method: str, endpoint: str, status: str, duration: float) -> None:
    key = (method, endpoint, status)
    series = _request_series.get(key)
    if series is None:
        series = _request_series[key] = (REQUESTS.labels(*key), REQUEST_DURATION.labels(endpoint))
    series[0].inc()
    series[1].observe(duration)


def observe_scores(probabilities: list[float]) -> None:
    """Count the customers scored, one increment per bin for a whole batch."""
    PREDICTIONS.inc(len(probabilities))
    last = len(_probability_bins) - 1
    if len(probabilities) == 1:
        _probability_bins[min(bisect.bisect_right(PROBABILITY_EDGES, probabilities[0]) - 1, last)].inc()
        return
    bins = np.minimum(np.searchsorted(PROBABILITY_EDGES, probabilities, side="right") - 1, last)
    for child, count in zip(_probability_bins, np.bincount(bins, minlength=last + 1).tolist(), strict=True):
        if count:
            child.inc(count)


def exposition() -> tuple[bytes, str]:
    if _metrics_dir is None:
        return generate_latest(), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST


# ---- gunicorn's hooks (gunicorn.conf.py) ----


def clear_folder(folder: str) -> None:
    """At the master's start: files left by an earlier run would be counted again."""
    for name in os.listdir(folder):
        os.remove(os.path.join(folder, name))


def choose_slot(worker, workers) -> None:
    """pre_fork, in the master: the lowest slot no running worker holds."""
    taken = {getattr(other, "metrics_slot", None) for other in workers}
    worker.metrics_slot = next(slot for slot in range(len(taken) + 1) if slot not in taken)


def take_slot(worker) -> None:
    """post_fork, in the new worker: write under the slot chosen for it."""
    global _identity
    _identity = f"worker{worker.metrics_slot}"
