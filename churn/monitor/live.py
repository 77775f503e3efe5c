"""The drift counts of the service: each answered customer counted in its bin of every feature and of the churn
probability (churn.monitor.drift's bins), for Prometheus to compare with the training split (docs/monitoring.md).

An increment of a multiprocess counter costs about a microsecond (a lock and a write to its file): twenty per
customer would cost more than a tenth of a one-customer request. So a process adds its customers to a plain list,
and a thread of its own hands the list to churn.metrics once a second (FLUSH_SECONDS), one increment per bin that
moved; /metrics in this process, and gunicorn's worker_exit (a recycled worker), hand it over at once. A worker
killed outright loses at most its last second of counts.
"""

import logging
import operator
import os
import threading
import time
from bisect import bisect_right

from churn import metrics
from churn.model.schema import FEATURES
from churn.monitor.drift import (
    CATEGORY_BIN,
    SCORE,
    Reference,
    ReferenceUnavailable,
    series_counts,
    series_keys,
)

log = logging.getLogger(__name__)
FLUSH_SECONDS = 1.0
SERIES = series_keys()
FEATURE_NAMES = [f.name for f in FEATURES]


class _Pending:
    """This process's counts not yet handed to churn.metrics, by series (SERIES' order)."""

    def __init__(self):
        self.counts = [0] * len(SERIES)
        self.lock = threading.Lock()
        self.flushing = False  # whether this process's flushing thread runs
        self.publish = None  # churn.metrics' adder of the series, once a reference is loaded

    def flush(self) -> None:
        with self.lock:
            counts, self.counts = self.counts, [0] * len(SERIES)
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
    publish = _pending.publish
    _pending = _Pending()
    _pending.publish = publish


os.register_at_fork(after_in_child=_forked)


def flush() -> None:
    """Hand this process's counts to churn.metrics now: before /metrics answers, and as a worker exits."""
    _pending.flush()


class DriftCounts:
    """Counts the customers an endpoint answers in the bins of a model's reference profile."""

    def __init__(self, reference: Reference):
        self.reference = reference
        # Where each feature's bins start among SERIES.
        self.offsets = {name: SERIES.index((name, reference.bins(name)[0])) for name in [*FEATURE_NAMES, SCORE]}
        self.categories = [
            (f.name, {spelling: self.offsets[f.name] + i for spelling, i in CATEGORY_BIN[f.name].items()})
            for f in FEATURES
            if f.categorical
        ]
        self.numbers = [(f.name, reference.edges[f.name], self.offsets[f.name]) for f in FEATURES if not f.categorical]
        self.score = (reference.edges[SCORE], self.offsets[SCORE])
        _pending.publish = metrics.drift_series(SERIES, reference.share_list())

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
        """One customer counted in plain Python; a batch (columns, as the scorer read them, and its probabilities as an
        array under SCORE when it has them) with numpy."""
        if columns is None:
            self.observe_one(customers[0], probabilities[0])
            return
        added = series_counts(self.reference, columns, columns.get(SCORE, probabilities)).tolist()
        pending = _pending
        with pending.lock:
            pending.counts = list(map(operator.add, pending.counts, added))
        if not pending.flushing:
            pending.start()

    def observe_one(self, customer: dict, probability: float) -> None:
        pending = _pending
        with pending.lock:
            totals = pending.counts
            for name, position in self.categories:
                totals[position[customer[name]]] += 1
            for name, edges, offset in self.numbers:  # drift.number_bins' bin, for one value
                totals[offset + bisect_right(edges, customer[name])] += 1
            edges, offset = self.score
            totals[offset + bisect_right(edges, probability)] += 1
        if not pending.flushing:
            pending.start()
