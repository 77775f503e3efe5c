"""The prediction log: every answered customer written to the store (churn.monitor.store), off the request path.

A request only appends its Answer to this worker's queue (a lock and an append); a writer thread, started in the
worker on its first answer (never in gunicorn's master, whose threads and connections a fork would not carry),
turns the answers into rows and writes them in batches. The queue holds at most `bound` customers: while the store
is slow or down, answers go on, the writer keeps its batch and retries, and what does not fit is dropped, counted in
/metrics (churn_prediction_log_dropped_total) and logged at most once a minute. A worker's exit (gunicorn's
worker_exit hook, which SIGTERM, SIGHUP and recycling all reach; atexit under waitress and Flask's server) flushes
the queue while the store is up.
"""

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from operator import itemgetter, methodcaller

from churn import metrics
from churn.model.schema import ID_COLUMN
from churn.model.scoring import canonical_values
from churn.monitor.store import FEATURE_NAMES, Store, StoreError

log = logging.getLogger(__name__)
BATCH = 1000  # customers that wake the writer before its second is up
WAIT_SECONDS = 1.0  # the longest an answer waits in the queue while the store is up
RETRY_SECONDS = 1.0
EXIT_SECONDS = 5.0  # the flush at a worker's exit: within gunicorn's graceful timeout (8 s)
COMPLAINT_SECONDS = 60.0
# Categories reach the log in the model's spelling, however a client spelled them.
SPELLINGS = canonical_values()
_logs = weakref.WeakSet()  # every PredictionLog of this process, for the exit hooks


class Complaint:
    """A log line about a recurring trouble, at most once per COMPLAINT_SECONDS, saying how often it happened."""

    def __init__(self, message: str):
        self.message, self.count, self.next = message, 0, 0.0

    def __call__(self, number: int = 1, **fields) -> None:
        self.count += number
        now = time.monotonic()
        if now >= self.next:
            log.error(self.message, self.count, *fields.values())
            self.count, self.next = 0, now + COMPLAINT_SECONDS


class PredictionLog:
    """This process's queue of answers to log and its writer."""

    def __init__(self, url: str, model_version: str, threshold: float, bound: int):
        self.url, self.model_version, self.threshold, self.bound = url, model_version, threshold, bound
        self.reset()
        os.register_at_fork(after_in_child=self.reset)
        _logs.add(self)
        try:  # create or upgrade the schema now, so that a wrong URL is in the log at start
            Store(url).close()
        except StoreError as e:
            log.error("prediction log: the store is unavailable at start (%s); answers are queued meanwhile", e)

    def reset(self) -> None:
        """A new process's state: no queue, no writer (a fork keeps neither thread nor connection)."""
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        # (endpoint, unix time, prediction ids, customers, probabilities, the challenger's or None)
        self.pending: deque = deque()
        self.held = 0  # customers queued or being written
        self.writer: threading.Thread | None = None
        self.hurry = False  # a flush wants the writer not to wait
        self.overflow = Complaint("prediction log: %d customers dropped, the queue holding %d is full")
        self.unavailable = Complaint("prediction log: %d writes failed, the store is unavailable (%s)")

    def put(self, endpoint: str, answer) -> None:
        """On the request path: queue an answer, or drop it when the queue is full."""
        customers = len(answer.prediction_ids)
        with self.lock:
            if self.writer is None:
                self.writer = threading.Thread(target=self.write_forever, name="prediction-log", daemon=True)
                self.writer.start()
            if self.held + customers > self.bound:
                metrics.count_log_dropped(customers)
                self.overflow(customers, bound=self.bound)
                return
            # Not the answer's body, which can be megabytes: memory stays bounded by the customers held.
            held = answer.prediction_ids, answer.customers, answer.probabilities, answer.challenger_probabilities
            self.pending.append((endpoint, time.time(), *held))
            self.held += customers
            if self.held >= BATCH:
                self.changed.notify_all()

    def write_forever(self) -> None:
        store = None
        while True:
            with self.lock:
                if not (self.hurry and self.pending) and self.held < BATCH:
                    self.changed.wait(WAIT_SECONDS)
                batch = list(self.pending)
                self.pending.clear()
            if not batch:
                continue
            try:
                store = store or Store(self.url)
                rows = self.rows(batch, store.time_value)
                store.write_predictions(rows)
            except Exception as e:  # StoreError, or anything else: the writer must outlive it, as answers do
                self.unavailable(1, error=str(e) if isinstance(e, StoreError) else repr(e))
                if store is not None:
                    store.close()
                    store = None
                with self.lock:  # kept, ahead of what came since, for the next try
                    self.pending.extendleft(reversed(batch))
                time.sleep(RETRY_SECONDS)
                continue
            metrics.count_logged(len(rows))
            with self.lock:
                self.held -= len(rows)
                self.changed.notify_all()

    def rows(self, batch: list, time_value) -> list[tuple]:
        """The store's rows (store.PREDICTION_COLUMNS) of the answers in batch, built a column at a time (C loops:
        map, itemgetter, zip), times made by time_value (the store's kind of time) once per answer."""
        endpoints, times, ids, customers, probabilities, challenger = [], [], [], [], [], []
        for endpoint, unix_time, answer_ids, answer_customers, answer_probabilities, shadow in batch:
            endpoints += [endpoint] * len(answer_ids)
            times += [time_value(unix_time)] * len(answer_ids)
            ids += answer_ids
            customers += answer_customers
            probabilities += answer_probabilities
            challenger += shadow or [None] * len(answer_ids)
        features = [
            list(map(SPELLINGS[name].__getitem__, column)) if name in SPELLINGS else column
            for name, column in ((name, list(map(itemgetter(name), customers))) for name in FEATURE_NAMES)
        ]
        customer_ids = [None if i is None else str(i) for i in map(methodcaller("get", ID_COLUMN), customers)]
        decisions = [p >= self.threshold for p in probabilities]
        versions = [self.model_version] * len(ids)
        columns = [ids, times, versions, endpoints, customer_ids, *features, probabilities, decisions, challenger]
        return list(zip(*columns, strict=True))

    def flush(self, timeout: float = EXIT_SECONDS) -> int:
        """Wait until the queue is written, or timeout seconds; the customers still unwritten (logged when any)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            if self.writer is None:
                return 0
            self.hurry = True
            self.changed.notify_all()
            while self.held and time.monotonic() < deadline:
                self.changed.wait(min(0.1, deadline - time.monotonic()))
            self.hurry = False
            left = self.held
        if left:
            log.error("prediction log: %d customers not written at exit, the store being unavailable", left)
        return left


def flush_all() -> None:
    """The exit hooks' flush of every log of this process."""
    for prediction_log in list(_logs):
        prediction_log.flush()


atexit.register(flush_all)
