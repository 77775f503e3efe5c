"""The prediction log: every answered customer written to the store (churn.monitor.store), off the request path.

A request only appends its Answer to this worker's queue (a lock and an append); a writer thread, started in the
worker on its first answer (never in gunicorn's master, whose threads and connections a fork would not carry),
writes what is queued as one pack (churn.monitor.packed), which readers unpack into a row per customer. The queue
holds at most `bound` customers: while the store is slow or down, answers go on, the writer keeps its batch and
retries, and what does not fit is dropped, counted in /metrics (churn_prediction_log_dropped_total) and logged at
most once a minute. A worker's exit (gunicorn's worker_exit hook, which SIGTERM, SIGHUP and recycling all reach;
atexit under waitress and Flask's server) flushes the queue while the store is up.
"""

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque

from churn import metrics
from churn.monitor import packed
from churn.monitor.store import Store, StoreError

log = logging.getLogger(__name__)
BATCH = 4000  # customers that wake the writer before its second is up (half the queue's bound when that is less)
WAIT_SECONDS = 1.0  # the longest an answer waits in the queue while the store is up
RETRY_SECONDS = 1.0
EXIT_SECONDS = 5.0  # the flush at a worker's exit: within gunicorn's graceful timeout (8 s)
COMPLAINT_SECONDS = 60.0
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
        self.batch = min(BATCH, max(1, bound // 2))
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
        # churn.monitor.packed.Queued: memory stays bounded by the customers held (answers' bodies are not kept).
        self.pending: deque = deque()
        self.held = 0  # customers queued or being written
        self.writer: threading.Thread | None = None
        self.hurry = False  # a flush wants the writer not to wait
        self.overflow = Complaint("prediction log: %d customers dropped, the queue holding %d is full")
        self.unavailable = Complaint("prediction log: %d writes failed, the store is unavailable (%s)")

    def put(self, endpoint: str, answer) -> None:
        """On the request path: queue an answer, or drop it when the queue is full."""
        customers = len(answer.prediction_ids)
        kept = packed.queued(endpoint, answer)
        with self.lock:
            if self.writer is None:
                self.writer = threading.Thread(target=self.write_forever, name="prediction-log", daemon=True)
                self.writer.start()
            if self.held + customers > self.bound:
                metrics.count_log_dropped(customers)
                self.overflow(customers, bound=self.bound)
                return
            self.pending.append(kept)
            self.held += customers
            if self.held >= self.batch:
                self.changed.notify_all()

    def write_forever(self) -> None:
        store = None
        while True:
            with self.lock:
                if not (self.hurry and self.pending) and self.held < self.batch:
                    self.changed.wait(WAIT_SECONDS)
                batch = list(self.pending)
                self.pending.clear()
            if not batch:
                continue
            customers = sum(len(answer.prediction_ids) for answer in batch)
            try:
                store = store or Store(self.url)
                store.write_packed(packed.pack(batch, self.model_version, self.threshold))
            except Exception as e:  # StoreError, or anything else: the writer must outlive it, as answers do
                self.unavailable(1, error=str(e) if isinstance(e, StoreError) else repr(e))
                if store is not None:
                    store.close()
                    store = None
                with self.lock:  # kept, ahead of what came since, for the next try
                    self.pending.extendleft(reversed(batch))
                time.sleep(RETRY_SECONDS)
                continue
            metrics.count_logged(customers)
            with self.lock:
                self.held -= customers
                self.changed.notify_all()

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
