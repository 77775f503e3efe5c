"""gunicorn's gthread worker, taking new connections in turn with its siblings (`gunicorn.conf.py`'s `gthread`).

A gthread worker keeps every connection it accepts until the client closes it (nginx keeps its upstream ones for
1,000 requests or a minute idle), and of the workers woken by a new connection the first to call accept() wins.
wrk's 8 connections landed all on one of two workers in 1 run of 12, and 7/1 in 3 more: one core then idled and
the throughput halved. Here each worker publishes how many connections it holds in memory that all workers share,
and one holding more than an accepting sibling leaves new connections to that sibling until it holds as many, or for
50 ms at most (a sibling stuck, killed or gone costs a new connection that wait, never the connection).
"""

import mmap
import os
import selectors
import time

from gunicorn.workers.gthread import ThreadWorker

# How long a busier worker leaves a new connection to a less busy sibling: a sibling whose threads hold its
# interpreter lock answers its poller within the interpreter's switch interval (5 ms), one the scheduler keeps waiting
# on a loaded machine within tens of milliseconds.
DEFER_SECONDS = 0.05
# Workers beyond this many share no board and accept as plain gthread workers do.
SLOTS = 64
# How often a worker leaving connections to a sibling looks again whether the sibling has caught up.
RECHECK_SECONDS = 0.001
# Published by a worker that does not accept (stopping, or at worker_connections): never the least busy.
NOT_ACCEPTING = 2**31 - 1


class Board:
    """Each worker's pid and connection count, in anonymous shared memory made before the workers fork."""

    def __init__(self, slots: int = SLOTS):
        self._memory = mmap.mmap(-1, slots * 8)
        self._cells = memoryview(self._memory).cast("i")  # pid, connections; pid 0 for a free slot

    def claim(self, holder: int) -> int | None:
        """A free slot, or a dead worker's, now held by holder; None when every slot holds a live process. Not safe
        for two claims at once: gunicorn's master makes them all, one worker at a time."""
        for slot in range(len(self._cells) // 2):
            pid = self._cells[2 * slot]
            if pid == 0 or not alive(pid):
                self._cells[2 * slot] = holder
                self._cells[2 * slot + 1] = NOT_ACCEPTING
                return slot
        return None

    def hand(self, slot: int, pid: int) -> None:
        """The slot's holder is now pid (the worker the master claimed it for)."""
        self._cells[2 * slot] = pid

    def release(self, slot: int) -> None:
        self._cells[2 * slot + 1] = NOT_ACCEPTING
        self._cells[2 * slot] = 0

    def publish(self, slot: int, connections: int) -> None:
        self._cells[2 * slot + 1] = connections

    def fewest_elsewhere(self, slot: int) -> int:
        """The fewest connections an accepting live sibling holds (NOT_ACCEPTING when there is none)."""
        fewest = NOT_ACCEPTING
        pids, counts = self._cells[::2].tolist(), self._cells[1::2].tolist()
        for other, (pid, connections) in enumerate(zip(pids, counts, strict=True)):
            if other != slot and pid and connections < fewest and alive(pid):
                fewest = connections
        return fewest


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user took the pid
        return False
    return True


# Imported by gunicorn's master to find the worker class, so the workers it forks share this one.
BOARD = Board()


class BalancedThreadWorker(ThreadWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # In the master, which makes each worker before forking it: held by the master until the worker takes it.
        self.slot = BOARD.claim(os.getpid())
        self.deferred_until = None  # set while the listeners are left to the siblings

    def init_process(self):
        if self.slot is not None:
            BOARD.hand(self.slot, os.getpid())
        try:
            super().init_process()
        finally:
            if self.slot is not None:
                BOARD.release(self.slot)

    def set_accept_enabled(self, enabled):
        if self.deferred_until is not None:  # the listeners are already off the poller
            self.deferred_until, self._accepting = None, False
        super().set_accept_enabled(enabled)
        self.publish()

    def wait_for_and_dispatch_events(self, timeout):
        if self.deferred_until is not None:
            left = self.deferred_until - time.monotonic()
            if left <= 0 or not self.busier_than_a_sibling():  # time's up, or the sibling caught up
                self.take_what_siblings_left()
            else:
                timeout = min(timeout, left, RECHECK_SECONDS)
        self.publish()  # connections closed since the last turn of the loop
        super().wait_for_and_dispatch_events(timeout)

    def accept(self, listener):
        if self.deferred_until is not None:  # another listener's readiness, from the poll that deferred
            return
        if self.busier_than_a_sibling():
            # Off the poller meanwhile, rather than declining each readiness: this worker's threads keep its
            # interpreter lock.
            for each in self.sockets:
                self.poller.unregister(each)
            self.deferred_until = time.monotonic() + DEFER_SECONDS
            return
        super().accept(listener)
        self.publish()

    def busier_than_a_sibling(self) -> bool:
        return self.slot is not None and self.nr_conns > 0 and self.nr_conns > BOARD.fewest_elsewhere(self.slot)

    def take_what_siblings_left(self):
        self.deferred_until = None
        for listener in self.sockets:
            self.poller.register(listener, selectors.EVENT_READ, self.accept)
            super().accept(listener)  # a connection still queued; EAGAIN, ignored, when a sibling took it
        self.publish()

    def publish(self):
        if self.slot is not None:
            BOARD.publish(self.slot, self.nr_conns if self._accepting else NOT_ACCEPTING)
