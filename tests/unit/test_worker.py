"""churn/serve/worker.py's board of connection counts, with real processes (the server test is
tests/integration/test_worker_servers.py)."""

import os
import subprocess
import sys

import pytest

from churn.serve.worker import NOT_ACCEPTING, Board


@pytest.fixture
def sibling():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_worker_sees_the_fewest_connections_an_accepting_sibling_holds(sibling):
    board = Board(slots=4)
    own, other = board.claim(os.getpid()), board.claim(sibling)
    assert own != other
    assert board.fewest_elsewhere(own) == NOT_ACCEPTING  # a sibling not yet accepting
    board.publish(other, 3)
    board.publish(own, 1)
    assert board.fewest_elsewhere(own) == 3
    assert board.fewest_elsewhere(other) == 1


def test_a_dead_workers_count_is_ignored_and_its_slot_taken_again(sibling):
    board = Board(slots=2)
    own, gone = board.claim(os.getpid()), board.claim(dead_pid())
    board.publish(gone, 0)
    assert board.fewest_elsewhere(own) == NOT_ACCEPTING
    assert board.claim(sibling) == gone


def test_a_released_slot_is_free_and_a_full_board_gives_none(sibling):
    board = Board(slots=1)
    own = board.claim(os.getpid())
    assert board.claim(sibling) is None  # that worker accepts as a plain gthread one
    board.release(own)
    assert board.claim(sibling) == own


def test_a_slot_the_master_claims_is_handed_to_its_worker(sibling):
    board = Board(slots=2)
    slot = board.claim(os.getpid())  # as gunicorn's master, before the fork
    other = board.claim(os.getpid())
    board.publish(other, 0)
    assert board.claim(sibling) is None  # held by a live master: not free
    board.hand(slot, sibling)
    board.publish(slot, 2)
    assert board.fewest_elsewhere(other) == 2
