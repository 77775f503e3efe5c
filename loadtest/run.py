"""Load and faults against the real gunicorn on 127.0.0.1: a soak, a worker killed, the master stopped and reloaded.

`make loadtest` runs each scenario at full length and prints its figures; tests/integration/test_load_faults.py runs
short versions and asserts on the same figures. gunicorn runs its default worker model (gunicorn.conf.py: gthread),
and sync workers where a scenario says so. Every request opens its own connection and closes it after the answer
(what nginx's keep-alive saves the service; the harder case), posts the sample customer with its own X-Request-ID,
and ends as one of:
ok (2xx), non2xx, refused (the connection was refused: nothing listens), or failed (connected, but no
complete answer: reset, closed early or timed out).
"""

import argparse
import contextlib
import http.client
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from churn.model.schema import SAMPLE_CUSTOMER
from churn.serve.drain import socket_inodes
from devtools import (
    MODEL_FILE,
    free_port,
    gunicorn_command,
    replace_model,
    running_server,
    train_model,
    wait_for,
    worker_pids,
)

BODY = json.dumps(SAMPLE_CUSTOMER).encode()
CONNECT_TIMEOUT = 5
# Long enough for a request queued behind 64 others on a loaded 2-core machine; a hang still ends the run.
READ_TIMEOUT = 15


# ---- gunicorn's processes, read from /proc


def rss_kib(pid: int) -> int | None:
    """Resident memory of pid in KiB, or None once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


# ---- The load


@dataclass
class Outcome:
    start: float
    end: float
    kind: str  # ok, non2xx, refused, failed
    request_id: str
    error: str = ""
    model_version: str = ""  # the answer's X-Model-Version


@dataclass
class Load:
    """concurrency threads, each sending one request after another until stopped or duration has passed."""

    port: int
    concurrency: int
    duration: float
    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.concurrency)]

    def start(self) -> "Load":
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def join(self) -> list[Outcome]:
        for thread in self.threads:
            thread.join(self.duration + CONNECT_TIMEOUT + READ_TIMEOUT + 5)
        return self.outcomes

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _client(self) -> None:
        deadline = self.started + self.duration
        while not self.stop.is_set() and time.monotonic() < deadline:
            outcome = self.request()
            self.outcomes.append(outcome)
            if outcome.kind == "refused":
                # Nothing listens: retrying at once would only spin.
                time.sleep(0.01)

    def request(self) -> Outcome:
        request_id = uuid.uuid4().hex
        start = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=CONNECT_TIMEOUT)
        try:
            try:
                connection.connect()
            except ConnectionRefusedError as e:
                return Outcome(start, time.monotonic(), "refused", request_id, repr(e))
            connection.sock.settimeout(READ_TIMEOUT)
            headers = {"Content-Type": "application/json", "X-Request-ID": request_id, "Connection": "close"}
            connection.request("POST", "/predict", BODY, headers)
            response = connection.getresponse()
            body = response.read()
            kind = "ok" if 200 <= response.status < 300 and b'"churn_probability":' in body else "non2xx"
            error = "" if kind == "ok" else str(response.status)
            return Outcome(start, time.monotonic(), kind, request_id, error, response.getheader("X-Model-Version", ""))
        except (OSError, http.client.HTTPException) as e:
            return Outcome(start, time.monotonic(), "failed", request_id, repr(e))
        finally:
            connection.close()


def count(outcomes: list[Outcome]) -> dict:
    kinds = {"ok": 0, "non2xx": 0, "refused": 0, "failed": 0}
    for outcome in outcomes:
        kinds[outcome.kind] += 1
    return {"requests": len(outcomes), **kinds}


def latency_ms(outcomes: list[Outcome]) -> dict:
    times = sorted((o.end - o.start) * 1000 for o in outcomes if o.kind == "ok")
    if not times:
        return {}
    return {"p50_ms": round(times[len(times) // 2], 1), "p99_ms": round(times[int(len(times) * 0.99)], 1)}


def served_request_ids(log: Path) -> set[str]:
    """The request IDs the application logged: requests that reached a worker and were answered by it."""
    ids = set()
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"logger":"churn.access"' in line:
            ids.add(json.loads(line)["request_id"])
    return ids


# ---- Scenarios: each starts its own gunicorn, returns its figures


@contextlib.contextmanager
def gunicorn(log: Path, workers: int = 2, **env):
    """Yield (port, master process) once every worker has booted (the service is ready with the first)."""
    port = free_port()
    command = gunicorn_command(port, workers)
    with running_server(command, port, env={k: str(v) for k, v in env.items()}, log_path=log) as (_, process):
        if not wait_for(lambda: len(worker_pids(process.pid)) == workers, timeout=30):
            raise RuntimeError(f"gunicorn did not boot {workers} workers; see {log}")
        yield port, process


def soak(duration: float, concurrency: int, window: float, warmup: float, log: Path) -> dict:
    """Steady load; each worker's RSS sampled every second: mean of the first window vs the last.

    Worker recycling (max_requests) is turned off: a recycled worker starts small again and would hide a leak.
    """
    with gunicorn(log, GUNICORN_MAX_REQUESTS=0) as (port, process):
        Load(port, concurrency, warmup).start().join()  # page in what the first requests touch; not a leak
        workers = worker_pids(process.pid)
        load = Load(port, concurrency, duration).start()
        samples = {pid: [] for pid in workers}  # pid -> [(t, rss_kib)]
        while load.elapsed() < duration:
            for pid in workers:
                if (rss := rss_kib(pid)) is not None:
                    samples[pid].append((load.elapsed(), rss))
            time.sleep(1)
        outcomes = load.join()
        same_workers = worker_pids(process.pid) == workers
    memory = {}
    for pid, points in samples.items():
        first = [rss for t, rss in points if t < window]
        last = [rss for t, rss in points if t >= duration - window]
        memory[pid] = {
            "first_kib": round(statistics.mean(first)),
            "last_kib": round(statistics.mean(last)),
            "growth_kib": round(statistics.mean(last) - statistics.mean(first)),
        }
    return {
        **count(outcomes),
        "requests_per_s": round(len(outcomes) / duration),
        **latency_ms(outcomes),
        "same_workers_throughout": same_workers,
        "rss_per_worker": memory,
    }


def sigkill(duration: float, concurrency: int, kill_at: float, log: Path) -> dict:
    """SIGKILL one worker in the middle of the load: gunicorn must replace it, the others keep serving."""
    with gunicorn(log) as (port, process):
        load = Load(port, concurrency, duration).start()
        time.sleep(kill_at)
        before = worker_pids(process.pid)
        victim = min(before)
        # Stopped first, so that the connections it holds can be counted before it dies with them: those it has
        # accepted (the listening socket is the master's too). A sync worker holds one; a gthread worker those it
        # serves in its threads and those it has accepted for them.
        os.kill(victim, signal.SIGSTOP)
        held = len(socket_inodes(victim) - socket_inodes(process.pid))
        killed = load.elapsed()
        os.kill(victim, signal.SIGKILL)
        replaced = wait_for(
            lambda: len(worker_pids(process.pid) - before) == 1 and len(worker_pids(process.pid)) == 2,
            timeout=max(duration - load.elapsed(), 5),
        )
        replaced_after = load.elapsed() - killed
        outcomes = load.join()
        answering = Load(port, 1, 0).request().kind == "ok"
    after_kill = [o for o in outcomes if o.start - load.started >= killed + replaced_after]
    return {
        **count(outcomes),
        "workers": len(before),
        "killed_at_s": round(killed, 2),
        "connections_held": held,
        "replaced": replaced,
        "replaced_after_s": round(replaced_after, 2),
        "failed_requests": [o.error for o in outcomes if o.kind == "failed"],
        "ok_after_replacement": sum(o.kind == "ok" for o in after_kill),
        "answering_after": answering,
    }


def sigterm(
    concurrency: int, signal_at: float, log: Path, graceful_timeout: float = 8, worker_class: str = "gthread"
) -> dict:
    """SIGTERM to the master under load: what was accepted completes, then connections are refused.

    gthread and sync workers stop differently (churn/serve/drain.py serves what each leaves queued).
    """
    env = {"GUNICORN_GRACEFUL_TIMEOUT": graceful_timeout, "GUNICORN_WORKER_CLASS": worker_class}
    with gunicorn(log, **env) as (port, process):
        load = Load(port, concurrency, signal_at + graceful_timeout + 3).start()
        time.sleep(signal_at)
        signalled = load.elapsed()
        process.send_signal(signal.SIGTERM)
        exited = wait_for(lambda: process.poll() is not None, timeout=graceful_timeout + 5, interval=0.01)
        exit_after = load.elapsed() - signalled
        # A little more load after the exit shows that nothing listens any more.
        time.sleep(0.5)
        load.stop.set()
        outcomes = load.join()
        exit_code = process.poll()
    served = served_request_ids(log)
    relative = [(o.start - load.started, o) for o in outcomes]
    # When each refusal was seen: a client stamps its start, and may send its SYN later than one stamped after it,
    # so only a request that started after a refusal was seen is certain to have come after the listener closed.
    refused_at = [o.end - load.started for o in outcomes if o.kind == "refused"]
    failed = [o for o in outcomes if o.kind == "failed"]
    return {
        **count(outcomes),
        "signalled_at_s": round(signalled, 2),
        "exited": exited,
        "exit_code": exit_code,
        "exit_after_s": round(exit_after, 2),
        "graceful_timeout_s": graceful_timeout,
        "worker_class": worker_class,
        "ok_after_signal": sum(1 for t, o in relative if o.kind == "ok" and o.end - load.started > signalled),
        "refused_before_signal": sum(t < signalled for t in refused_at),
        "first_refused_after_signal_s": round(min(refused_at) - signalled, 2) if refused_at else None,
        "ok_after_first_refused": sum(1 for t, o in relative if o.kind == "ok" and refused_at and t > min(refused_at)),
        # Failed, yet logged as answered by the application: a request cut off in a worker.
        "failed_though_served": sum(o.request_id in served for o in failed),
        "failed_requests": sorted({o.error for o in failed}),
    }


def sighup(duration: float, concurrency: int, signal_at: float, log: Path, new_model: Path | None = None) -> dict:
    """SIGHUP (reload) under load: new workers replace the old ones, and no request fails.

    With new_model, the served file is first replaced by it (churn/serve/reload.py): the answers move from the
    old model's version to the new one's. Then, still under load, by a damaged file: the new model keeps serving.
    """
    served = log.with_name(f"{log.stem}-model") / MODEL_FILE.name
    served.parent.mkdir(exist_ok=True)
    replace_model(MODEL_FILE, served)
    with gunicorn(log, MODEL_FILE=served) as (port, process):

        def reload(timeout: float) -> bool:
            before = worker_pids(process.pid)
            process.send_signal(signal.SIGHUP)
            return wait_for(
                lambda: len(worker_pids(process.pid)) == 2 and not worker_pids(process.pid) & before, timeout
            )

        load = Load(port, concurrency, duration).start()
        time.sleep(signal_at)
        if new_model:
            replace_model(new_model, served)
        reloaded = reload(timeout=max(duration - load.elapsed(), 5))
        damaged_kept = None
        if new_model:
            served.write_bytes(served.read_bytes()[:100])  # a copy cut short
            reload(timeout=max(duration - load.elapsed(), 5))
            damaged_kept = Load(port, 1, 0).request().model_version
            time.sleep(max(duration - load.elapsed() - 1, 0))
        outcomes = load.join()
        alive = process.poll() is None
    # Each version answered, in the order each first answered.
    versions = list(dict.fromkeys(o.model_version for o in sorted(outcomes, key=lambda o: o.end) if o.kind == "ok"))
    return {
        **count(outcomes),
        "workers_replaced": reloaded,
        "master_alive": alive,
        "versions": versions,
        "last_version": max(outcomes, key=lambda o: o.end).model_version if outcomes else None,
        "version_after_damaged_reload": damaged_kept,
        "failed_requests": sorted({o.error for o in outcomes if o.kind != "ok"}),
    }


def recycle(duration: float, concurrency: int, max_requests: int, log: Path) -> dict:
    """Workers retired after max_requests (gunicorn.conf.py's default is 100000) and replaced, under load."""
    with gunicorn(log, GUNICORN_MAX_REQUESTS=max_requests, GUNICORN_MAX_REQUESTS_JITTER=max_requests // 10) as (
        port,
        process,
    ):
        seen = set()
        load = Load(port, concurrency, duration).start()
        while load.elapsed() < duration:
            seen |= worker_pids(process.pid)
            time.sleep(0.05)
        outcomes = load.join()
    return {
        **count(outcomes),
        "workers_seen": len(seen),
        "failed_requests": sorted({o.error for o in outcomes if o.kind != "ok"}),
    }


SCENARIOS = ["soak", "sigkill", "sigterm", "sigterm-sync", "sighup", "recycle"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=30, help="seconds of load per scenario")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--only", choices=SCENARIOS, action="append")
    args = parser.parse_args(argv)
    chosen = args.only or SCENARIOS
    logs = Path(tempfile.mkdtemp(prefix="churn-loadtest-"))
    if "sighup" in chosen:
        print("training a second model (C=0.1) for the reload...", flush=True)
        new_model = train_model(logs / "model_C=0.1.bin", C=0.1)
    d, c = args.duration, args.concurrency
    scenarios = {
        "soak": lambda: soak(d, c, window=min(10, d / 3), warmup=2, log=logs / "soak.log"),
        "sigkill": lambda: sigkill(d, c, kill_at=d / 2, log=logs / "sigkill.log"),
        "sigterm": lambda: sigterm(c, signal_at=min(5, d / 2), log=logs / "sigterm.log"),
        "sigterm-sync": lambda: sigterm(c, signal_at=min(5, d / 2), log=logs / "sigterm-sync.log", worker_class="sync"),
        "sighup": lambda: sighup(d, c, signal_at=d / 3, log=logs / "sighup.log", new_model=new_model),
        "recycle": lambda: recycle(d, c, max_requests=1000, log=logs / "recycle.log"),
    }
    print(f"gunicorn on 127.0.0.1, {c} concurrent connections, {d:g} s per scenario; server logs in {logs}")
    for name in chosen:
        figures = scenarios[name]()
        print(f"{name}: {json.dumps(figures)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
