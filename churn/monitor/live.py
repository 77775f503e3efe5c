"""The drift counts of the service: each answered customer counted in its bin of every feature and of the churn
probability (churn.monitor.drift's bins), for Prometheus to compare with the training split (docs/monitoring.md).

An increment of a multiprocess counter costs about a microsecond (a lock and a write to its file): twenty per
customer would cost more than a tenth of a one-customer request. So a process adds a batch's counts to a plain list,
keeps one-customer requests' customers aside (binning one in Python took 5 µs, a tenth of answering it; with numpy,
a second's worth of them at once, about 3 µs each), and a thread of its own bins those and hands the list to
churn.metrics once a second (FLUSH_SECONDS), one increment per bin that moved; /metrics in this process, and
gunicorn's worker_exit (a recycled worker), hand it over at once. A worker killed outright loses at most its last
second of counts.
"""

import logging
import operator
import os
import threading
import time

import numpy as np

from churn import metrics
from churn.model.scoring import columns_of
from churn.monitor.drift import SCORE, Reference, ReferenceUnavailable, series_counts, series_keys

log = logging.getLogger(__name__)
FLUSH_SECONDS = 1.0
# One-customer requests' customers held for the flush at most: past them a request bins them itself.
HELD_CUSTOMERS = 20_000
SERIES = series_keys()


class _Pending:
    """This process's counts not yet handed to churn.metrics, by series (SERIES' order)."""

    def __init__(self):
        self.counts = [0] * len(SERIES)
        self.customers, self.probabilities = [], []  # one-customer requests', not yet binned
        self.lock = threading.Lock()
        self.flushing = False  # whether this process's flushing thread runs
        self.publish = None  # churn.metrics' adder of the series, once a reference is loaded
        self.binned = None  # the loaded reference's counts of (customers, probabilities)

    def flush(self) -> None:
        with self.lock:
            counts, self.counts = self.counts, [0] * len(SERIES)
            customers, probabilities = self.customers, self.probabilities
            self.customers, self.probabilities = [], []
        if customers and self.binned is not None:
            counts = list(map(operator.add, counts, self.binned(customers, probabilities)))
        if self.publish is not None and any(counts):
            self.publish(counts)

    def start(self) -> None:
        self.flushing = True
        threading.Thread(target=self._flush_every_second, name="drift-counts", daemon=True).start()

    def _flush_every_second(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            try:
                self.flush()
            except Exception:  # a count lost, never the thread
                log.exception("drift counts: cannot hand the counts to the metrics")


_pending = _Pending()


def _forked() -> None:
    """A new process (a gunicorn worker): none of the parent's counts, its lock or its thread."""
    global _pending
    publish, binned = _pending.publish, _pending.binned
    _pending = _Pending()
    _pending.publish, _pending.binned = publish, binned


os.register_at_fork(after_in_child=_forked)


def flush() -> None:
    """Hand this process's counts to churn.metrics now: before /metrics answers, and as a worker exits."""
    _pending.flush()


class DriftCounts:
    """Counts the customers an endpoint answers in the bins of a model's reference profile."""

    def __init__(self, reference: Reference):
        self.reference = reference
        _pending.publish = metrics.drift_series(SERIES, reference.share_list())
        _pending.binned = self.binned

    @classmethod
    def of(cls, profile: dict | None) -> tuple["DriftCounts | None", str | None]:
        """(the counts for a model's sidecar profile, None), or (None, why drift is not counted), which is logged."""
        try:
            if profile is None:
                raise ReferenceUnavailable("has no reference profile (a model trained before drift was measured)")
            return cls(Reference.from_json(profile)), None
        except ReferenceUnavailable as e:
            problem = f"the model's sidecar {e}: retrain with `python train.py` to count drift"
            log.warning("drift metrics off: %s", problem)
            return None, problem

    def observe(self, customers: list[dict], probabilities: list[float], columns: dict | None) -> None:
        """A batch (columns, as the scorer read them, and its probabilities as an array under SCORE when it has them)
        binned now with numpy; one customer (no columns) kept for the next flush, which bins them together."""
        pending = _pending
        if columns is None:
            with pending.lock:
                pending.customers += customers
                pending.probabilities += probabilities
                full = len(pending.customers) >= HELD_CUSTOMERS
            if full:  # the flushing thread is behind: memory stays bounded
                pending.flush()
        else:
            added = self.binned(customers, columns.get(SCORE, probabilities), columns)
            with pending.lock:
                pending.counts = list(map(operator.add, pending.counts, added))
        if not pending.flushing:
            pending.start()

    def binned(self, customers: list[dict], probabilities, columns: dict | None = None) -> list[int]:
        """The customers in each series' bin."""
        columns = columns or columns_of(customers)
        return series_counts(self.reference, columns, np.asarray(probabilities, float)).tolist()
