"""Short versions of `make loadtest` (loadtest/run.py): real gunicorn on 127.0.0.1, 64 concurrent connections.

Only correctness is asserted (errors, failed requests, workers, memory growth, exit within the graceful
timeout); throughput and latency are printed by `make loadtest`, never asserted.
"""

import hashlib

import pytest

from devtools import MODEL_FILE
from loadtest import run

pytestmark = pytest.mark.slow

CONCURRENCY = 64
# A worker's RSS moves by tens of KiB over a run; a leak of even 100 bytes a request grows it by megabytes
# over `make loadtest`'s 30 s.
RSS_NOISE_KIB = 2048


def version(model_file) -> str:
    """What X-Model-Version says of a model file that train.py wrote as model_C=<C>.bin."""
    C = float(model_file.stem.removeprefix("model_C="))
    return f"C={C!r}-{hashlib.sha256(model_file.read_bytes()).hexdigest()[:12]}"


def show(figures: dict) -> dict:
    print(figures)  # shown by pytest on failure, and with -s
    return figures


def no_failures(figures: dict) -> None:
    assert figures["requests"] > 0
    assert (figures["non2xx"], figures["refused"], figures["failed"]) == (0, 0, 0), figures
    assert figures["ok"] == figures["requests"]


def test_soak_no_errors_and_flat_memory(tmp_path):
    figures = show(run.soak(duration=8, concurrency=CONCURRENCY, window=3, warmup=1, log=tmp_path / "log"))
    no_failures(figures)
    assert figures["same_workers_throughout"]
    assert len(figures["rss_per_worker"]) == 2
    for memory in figures["rss_per_worker"].values():
        assert memory["growth_kib"] <= RSS_NOISE_KIB, figures


def test_sigkill_of_a_worker_loses_at_most_its_request(tmp_path):
    figures = show(run.sigkill(duration=8, concurrency=CONCURRENCY, kill_at=3, log=tmp_path / "log"))
    assert figures["replaced"], figures
    # What the worker held dies with it: the requests in its threads and the connections it had accepted for them.
    # The other connections wait in the listening socket's queue, which the master and the other worker still hold.
    assert figures["failed"] <= figures["connections_held"], figures
    assert (figures["non2xx"], figures["refused"]) == (0, 0), figures
    assert figures["ok_after_replacement"] > 0
    assert figures["answering_after"]


@pytest.mark.parametrize("worker_class", ["gthread", "sync"])
def test_sigterm_completes_what_was_sent_then_refuses(tmp_path, worker_class):
    figures = show(run.sigterm(concurrency=CONCURRENCY, signal_at=2, log=tmp_path / "log", worker_class=worker_class))
    assert figures["exited"] and figures["exit_code"] == 0, figures
    assert figures["exit_after_s"] < figures["graceful_timeout_s"], figures
    assert figures["refused_before_signal"] == 0
    # Requests in flight at the signal, in a worker or queued in the listening socket, all complete ...
    assert figures["ok_after_signal"] > 0, figures
    assert figures["failed_though_served"] == 0, figures
    assert figures["failed"] == 0, figures
    # ... and once a connection has been refused (the listener is closed), nothing is served any more.
    assert figures["refused"] > 0, figures
    assert figures["ok_after_first_refused"] == 0, figures
    assert figures["non2xx"] == 0


def test_sighup_reloads_a_new_model_then_keeps_it_over_a_damaged_one_and_fails_no_request(tmp_path, other_model):
    figures = show(
        run.sighup(duration=10, concurrency=CONCURRENCY, signal_at=3, log=tmp_path / "log", new_model=other_model)
    )
    assert figures["workers_replaced"] and figures["master_alive"], figures
    no_failures(figures)
    old, new = (version(path) for path in (MODEL_FILE, other_model))
    assert figures["versions"] == [old, new], figures
    assert figures["last_version"] == new and figures["version_after_damaged_reload"] == new, figures


@pytest.mark.parametrize("max_requests", [300])
def test_recycled_workers_fail_no_request(max_requests, tmp_path):
    figures = show(run.recycle(duration=6, concurrency=CONCURRENCY, max_requests=max_requests, log=tmp_path / "log"))
    assert figures["workers_seen"] > 2, figures
    no_failures(figures)
