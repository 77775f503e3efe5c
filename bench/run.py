"""Throughput benchmark: this service against the course's classic service, Flask's floor, a bare WSGI app and itself
unobserved, straight at gunicorn (Cloud Run's path) and behind Elastic Beanstalk's nginx (the production path).

python -m bench.run [--quick] [--duration S] [--rounds N] [--out FILE]

Each app runs under gunicorn with the same flags (gunicorn.conf.py, 2 workers, a free loopback port, stdout to
/dev/null) and its default worker model, except the classic service, which runs as the course runs it, on sync
workers; behind nginx, each has an nginx of its own with the project's copy of EB's nginx.conf and .platform files.
wrk drives them interleaved, A B C per round; the table reports medians and the ratios the issue targets. The figures
are relative: only the ratios carry over to another machine.
Exit 0 whatever the figures; 1 if a server does not start or answers wrongly; 2 if wrk is unavailable.
"""

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from churn.model.data import DataError, load_data
from churn.model.schema import SAMPLE_CUSTOMER
from churn.model.training import FEATURE_NAMES
from churn.settings import Settings
from devtools import (
    MODEL_FILE,
    ROOT,
    Proxy,
    dataset_path,
    free_port,
    gunicorn_command,
    running_nginx,
    stop,
    worker_pids,
)

BATCH_SIZE = 1000
REFUSED = 10_000  # customers in the refusal measurement

# The worker model gunicorn.conf.py gives this service (GUNICORN_WORKER_CLASS), and the floors measured under it.
DEFAULT = None


@dataclass(frozen=True)
class App:
    module: str  # the WSGI app gunicorn serves
    title: str
    worker_class: str | None  # GUNICORN_WORKER_CLASS; DEFAULT: gunicorn.conf.py's
    behind_nginx: bool = False


SERVICES = {
    "ours": App("predict:app", "this service", DEFAULT),
    # As the course runs it: gunicorn's default, sync workers.
    "classic": App("bench.classic:app", "classic (course, sync)", "sync"),
    "floor": App("bench.floor:app", "floor (Flask, constant)", DEFAULT),
    "bare": App("bench.bare:app", "bare WSGI (constant)", DEFAULT),
    "unobserved": App("bench.unobserved:app", "this service, unobserved", DEFAULT),
    "challenger": App("bench.challenger:app", "with a shadow challenger", DEFAULT),
    "ours_nginx": App("predict:app", "this service", DEFAULT, behind_nginx=True),
    "ours_sync_nginx": App("predict:app", "this service, sync workers", "sync", behind_nginx=True),
    "classic_nginx": App("bench.classic:app", "classic (course, sync)", "sync", behind_nginx=True),
    # What no app can beat on this server and proxy: the ceiling of the first target.
    "bare_nginx": App("bench.bare:app", "bare WSGI (constant)", DEFAULT, behind_nginx=True),
}
DIRECT = [name for name, app in SERVICES.items() if not app.behind_nginx]
PROXIED = [name for name, app in SERVICES.items() if app.behind_nginx]
IMPORTS = {"ours": "predict", "classic": "bench.classic", "floor": "bench.floor", "bare": "bench.bare"}
IMPORTS |= {"unobserved": "bench.unobserved", "challenger": "bench.challenger"}
# Started and driven like the others, reported only in the targets: this service without its drift counts.
UNDRIFTED = "undrifted"
APPS = SERVICES | {UNDRIFTED: App("bench.undrifted:app", "this service without its drift counts", DEFAULT)}


class BenchError(Exception):
    """The benchmark cannot give meaningful figures (a server did not start, or answered wrongly)."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s runs (a smoke run, noisier)")
    # Five short rounds rather than three long ones: the same app's rate moves more between rounds here (a shared
    # virtual machine's 2 cores) than the costs the targets measure, and a median of five keeps one bad round out.
    parser.add_argument("--duration", type=int, default=6, help="seconds per wrk run (default 6)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers, the same for every app")
    parser.add_argument("--imports", type=int, default=5, help="fresh-process imports timed per app (default 5)")
    parser.add_argument("--out", type=Path, help="also write the Markdown table to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.imports = 3, 1, 3
    return args


# ---- Inputs


def batch_body() -> bytes:
    """The dataset's first 1,000 customers in the model's (cleaned) spelling, which the classic service needs too."""
    df = load_data(dataset_path()).head(BATCH_SIZE)
    return df[FEATURE_NAMES].to_json(orient="records").encode()


def raw_rows(n: int) -> list[dict]:
    """Whole rows of the dataset as read_csv reads them: its own names and values, customerID, Churn, and
    TotalCharges as text."""
    import pandas as pd

    return pd.read_csv(dataset_path(), dtype={"TotalCharges": str}).head(n).to_dict(orient="records")


def refusal_bodies() -> tuple[dict[str, bytes], bytes]:
    """Invalid bodies of 10,000 customers in the shapes an attacker sends (empty objects; every field blank, a list,
    or an unknown category), and 10,000 valid customers (the dataset's rows, repeated) in the model's spelling."""
    clean = json.loads(batch_body())
    valid = (clean * (REFUSED // len(clean) + 1))[:REFUSED]
    unknown = [{k: "unknown" if isinstance(v, str) else v for k, v in c.items()} for c in valid]
    refused = {
        "empty objects": [{}] * REFUSED,
        "blank fields": [dict.fromkeys(FEATURE_NAMES, "")] * REFUSED,
        "lists as values": [{name: [] for name in FEATURE_NAMES}] * REFUSED,
        "unknown categories": unknown,
    }
    return {kind: json.dumps(body).encode() for kind, body in refused.items()}, json.dumps(valid).encode()


def time_refusals(server: "Server", refused: dict[str, bytes], valid: bytes, requests: int) -> dict[str, tuple]:
    """For each invalid shape: the median seconds to refuse it and to score the valid body, interleaved one after the
    other, the two bodies' sizes, and the size of the refusal."""
    results = {}
    for kind, body in refused.items():
        times = {422: [], 200: []}
        for _ in range(requests):
            for sent, expected in ((body, 422), (valid, 200)):
                start = time.perf_counter()
                status, answer = post(server.url, sent, timeout=30, parse=False)
                times[expected].append(time.perf_counter() - start)
                if status != expected:
                    raise BenchError(f"the 10,000-customer body of {kind} got {status}, not {expected}")
                if expected == 422:
                    size = len(answer)
        results[kind] = (statistics.median(times[422]), statistics.median(times[200]), len(body), len(valid), size)
    return results


def ensure_wrk() -> str:
    if found := shutil.which("wrk"):
        return found
    if os.geteuid() != 0:
        print(
            "error: wrk is missing: install the Debian package `wrk` (apt-get install wrk) and rerun", file=sys.stderr
        )
        sys.exit(2)
    print("wrk is missing: installing the Debian package", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        if subprocess.run(command, env=env, stdout=subprocess.DEVNULL).returncode:
            print(f"error: {' '.join(command)} failed", file=sys.stderr)
            sys.exit(2)
    if not (found := shutil.which("wrk")):
        print("error: the wrk package installed no wrk command", file=sys.stderr)
        sys.exit(2)
    return found


# ---- Import time and size, each in a fresh interpreter

# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec, so a child would report this driver's.
IMPORT_PROBE = """
import time
start = time.perf_counter()
import {module}
took = time.perf_counter() - start
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(took, status["VmHWM"].split()[0])
"""


def measure_imports(runs: int, env: dict) -> dict[str, tuple[float, float]]:
    """Median seconds to import each app module and median peak RSS (MiB) of that process.

    The first import of each is discarded (it may compile .pyc files and fill the page cache);
    the others alternate between apps so that machine noise falls on each alike.
    """
    samples = {name: [] for name in IMPORTS}
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as metrics_dir:
        # As under gunicorn.conf.py: our metrics live in per-process files.
        env = {**env, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
        for run in range(runs + 1):
            for name, module in IMPORTS.items():
                result = subprocess.run(
                    [sys.executable, "-c", IMPORT_PROBE.format(module=module)],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                if result.returncode:
                    raise BenchError(f"import {module} failed:\n{result.stderr[-2000:]}")
                if run:
                    took, max_rss_kib = result.stdout.split()[-2:]
                    samples[name].append((float(took), int(max_rss_kib) / 1024))
    return {
        name: (statistics.median(t for t, _ in values), statistics.median(r for _, r in values))
        for name, values in samples.items()
    }


# ---- Servers


@dataclass
class Server:
    name: str
    port: int  # where requests go: nginx's port when the app is behind it
    process: subprocess.Popen  # gunicorn's master
    log_path: Path
    proxy: Proxy | None = None
    proxy_context: contextlib.AbstractContextManager | None = None
    startup: float = 0.0  # seconds from launch to the first correct answer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/predict"

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def cpu(self) -> float:
        """CPU seconds gunicorn, and nginx in front of it, have used so far."""
        return server_cpu(self.process.pid) + (server_cpu(self.proxy.process.pid) if self.proxy else 0.0)

    def stop(self) -> None:
        if self.proxy_context is not None:
            self.proxy_context.__exit__(None, None, None)
        stop(self.process)


def server_env() -> dict:
    """The environment every app starts with: the same model file, and no inherited metrics folder, so that
    gunicorn.conf.py gives each server its own."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["MODEL_FILE"] = os.environ.get("MODEL_FILE", str(MODEL_FILE))
    return env


def post(url: str, body: bytes, timeout: float = 10, parse: bool = True) -> tuple[int, object]:
    """The status and the answer (parsed, or as bytes; an error's as bytes)."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = response.read()
            return response.status, json.loads(answer) if parse else answer
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def start_server(name: str, workers: int, env: dict, log_dir: Path, probe: bytes) -> Server:
    """The app under gunicorn, and behind an nginx of its own if it is one of PROXIED; stop it with Server.stop()."""
    app = APPS[name]
    port = free_port()
    log_path = log_dir / f"{name}.log"
    if app.worker_class is not DEFAULT:
        env = {**env, "GUNICORN_WORKER_CLASS": app.worker_class}
    with open(log_path, "wb") as log:
        # The same gunicorn flags for every app: gunicorn.conf.py only sets server behaviour (preload, no access log,
        # worker recycling, timeouts, the metrics folder). stdout (our one JSON line per request) goes to
        # /dev/null: writing it stays inside the measurement.
        process = subprocess.Popen(
            gunicorn_command(port, workers, app.module),
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    server = Server(name, port, process, log_path)
    if app.behind_nginx:
        server.proxy_context = running_nginx(log_dir / f"{name}-nginx", port)
        try:
            server.proxy = server.proxy_context.__enter__()
        except (RuntimeError, TimeoutError) as e:
            stop(process)
            raise BenchError(f"nginx in front of {name} did not start: {e}") from None
        server.port = server.proxy.port
    started = time.perf_counter()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{name} exited with {process.returncode} before answering:\n{server.log_tail()}")
        try:
            status, _ = post(server.url, probe, timeout=2)
            if status == 200:
                server.startup = time.perf_counter() - started
                return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    server.stop()
    raise BenchError(f"{name} did not answer within 60 s:\n{server.log_tail()}")


def check_answers(servers: dict[str, "Server"], single: bytes, batch: bytes, raw_batch: bytes) -> None:
    """Benchmark only apps that answer right: ours and the classic agree; our batches have one answer per customer,
    the same in the dataset's spelling as in the model's."""
    answers = {name: post(server.url, single) for name, server in servers.items()}
    for name, (status, answer) in answers.items():
        if status != 200:
            raise BenchError(f"{name} answered {status}: {answer!r}")
    if {**answers["challenger"][1], "prediction_id": ""} != {**answers["ours"][1], "prediction_id": ""}:
        raise BenchError(f"the challenger changed our answer: {answers['challenger']!r}")
    ours, classic = answers["ours"][1]["churn_probability"], answers["classic"][1]["churn_probability"]
    if abs(ours - classic) > 1e-12:
        raise BenchError(f"our probability {ours!r} differs from the classic service's {classic!r}")
    status, answer = post(servers["ours"].url, batch, timeout=30)
    if status != 200 or len(answer) != BATCH_SIZE:
        raise BenchError(f"our service answered the {BATCH_SIZE}-customer batch with {status}")
    status, raw_answer = post(servers["ours"].url, raw_batch, timeout=30)
    if status != 200 or [a["churn_probability"] for a in raw_answer] != [a["churn_probability"] for a in answer]:
        raise BenchError(f"our service answered the raw {BATCH_SIZE}-customer batch with {status} or other figures")


def stat_fields(pid: int | Path) -> list[str]:
    """/proc/PID/stat's fields after the parenthesised command name (which may hold spaces): [0] is field 3."""
    return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def server_cpu(master_pid: int) -> float:
    """CPU seconds used so far by the master and all its workers, recycled ones included (reaped workers'
    time is in the master's cutime/cstime). Other load on the machine disturbs CPU per request far less
    than requests/s, which also counts the time a worker waits to be scheduled."""
    fields = stat_fields(master_pid)
    ticks = sum(int(x) for x in fields[11:15])
    for worker in worker_pids(master_pid):
        try:
            ticks += sum(int(x) for x in stat_fields(worker)[11:13])
        except (OSError, IndexError):
            continue
    return ticks / CLOCK_TICKS


def worker_memory(master_pid: int) -> tuple[float, float]:
    """Mean RSS and PSS (MiB) of the master's workers.

    With preload_app the model's pages are shared with the master and counted in each worker's RSS;
    PSS divides shared pages among the processes that share them, so it is the fair per-worker figure.
    """
    rss, pss = [], []
    for worker in worker_pids(master_pid):
        try:
            smaps = (Path("/proc") / str(worker) / "smaps_rollup").read_text()
            fields = dict(line.split(":", 1) for line in smaps.splitlines()[1:])
        except OSError:
            continue
        rss.append(int(fields["Rss"].split()[0]) / 1024)
        pss.append(int(fields["Pss"].split()[0]) / 1024)
    if not rss:
        return float("nan"), float("nan")
    return statistics.mean(rss), statistics.mean(pss)


# ---- wrk

WRK_SCRIPT = """wrk.method = "POST"
wrk.path = "{endpoint}"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open("{path}", "rb"))
wrk.body = f:read("*a")
f:close()
"""

UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def parse_duration(text: str) -> float:
    """wrk's latency ("812.00us", "1.52ms", "2.01s") in seconds."""
    number = text.rstrip("usm")
    return float(number) * UNITS[text[len(number) :]]


@dataclass
class WrkRun:
    rps: float
    p50: float
    p99: float
    requests: int
    bad: int  # non-2xx answers plus socket errors
    notes: list = field(default_factory=list)
    cpu: float = float("nan")  # server CPU seconds per request


def parse_wrk(output: str) -> WrkRun:
    rps = p50 = p99 = None
    requests = bad = 0
    notes = []
    for line in output.splitlines():
        words = line.split()
        if line.startswith("Requests/sec:"):
            rps = float(words[1])
        elif words[:1] == ["50%"]:
            p50 = parse_duration(words[1])
        elif words[:1] == ["99%"]:
            p99 = parse_duration(words[1])
        elif len(words) > 2 and words[1] == "requests" and words[2] == "in":
            requests = int(words[0])
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            bad += int(words[-1])
            notes.append(line.strip())
        elif line.strip().startswith("Socket errors:"):
            counts = dict(part.split() for part in line.split(":", 1)[1].split(","))
            bad += sum(int(count) for count in counts.values())
            notes.append(line.strip())
    if rps is None or p50 is None or p99 is None:
        raise BenchError(f"cannot read wrk's output:\n{output}")
    return WrkRun(rps, p50, p99, requests, bad, notes)


def run_wrk(wrk: str, server: Server, script: Path, seconds: int, args) -> WrkRun:
    command = [wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s", "--timeout", "10s"]
    command += ["--latency", "-s", str(script), server.url]
    cpu_before = server.cpu()
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    cpu = server.cpu() - cpu_before
    if result.returncode:
        raise BenchError(f"wrk failed ({result.returncode}): {result.stderr}")
    run = parse_wrk(result.stdout)
    if run.requests:
        run.cpu = cpu / run.requests
    return run


# ---- Report


def machine() -> dict:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "python": platform.python_version(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


@dataclass
class Summary:
    """One app's runs: medians, with the spread of requests/s."""

    rps: float
    low: float
    high: float
    p50: float
    p99: float
    cpu: float  # server CPU seconds per request

    @classmethod
    def of(cls, runs: list[WrkRun]) -> "Summary":
        rates = [r.rps for r in runs]
        return cls(
            statistics.median(rates),
            min(rates),
            max(rates),
            statistics.median(r.p50 for r in runs),
            statistics.median(r.p99 for r in runs),
            statistics.median(r.cpu for r in runs),
        )

    def rate(self, scale: int = 1) -> str:
        spread = f" ({self.low * scale:,.0f}–{self.high * scale:,.0f})" if self.low != self.high else ""
        return f"{self.rps * scale:,.0f}{spread}"

    def latency(self) -> str:
        return f"{ms(self.p50)} / {ms(self.p99)}"


def paired(results: dict, a: str, b: str, figure: str) -> float:
    """a's figure (a WrkRun field) over b's: the median over rounds of the ratio within each round. Both ran in the
    same minutes of a round, and here the machine's speed moves by more between rounds than the costs the targets
    measure; a ratio of the two medians would take each app's median from a different round."""
    pairs = zip(results[a], results[b], strict=True)
    return statistics.median(getattr(x, figure) / getattr(y, figure) for x, y in pairs)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def us(seconds: float) -> str:
    micro = seconds * 1e6
    return f"{micro:.1f} µs" if micro < 100 else f"{micro:,.0f} µs"


def mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def row(label: str, cells) -> str:
    return f"| {label} | " + " | ".join(cells) + " |"


def report(results: dict, imports: dict, memory: dict, startup: dict, info: dict, refusal: tuple, args) -> str:
    single = {name: Summary.of(results[name]) for name in SERVICES}
    batch = Summary.of(results["batch"])
    raw_single, raw_batch = Summary.of(results["raw_single"]), Summary.of(results["raw_batch"])
    explain_single, explain_batch = Summary.of(results["explain_single"]), Summary.of(results["explain_batch"])
    challenger_batch = Summary.of(results["challenger_batch"])
    settings = Settings.from_env()
    model = f"{settings.worker_class} ({settings.threads} threads)" if settings.worker_class == "gthread" else "sync"
    n = args.rounds
    empty = ("",) * (len(DIRECT) - 1)
    lines = [
        f"Measured {info['date']} on {info['cpu']}, {info['cores']} cores (load average at start {info['load']}), "
        f"Python {info['python']}; `python -m bench.run{' --quick' if args.quick else ''}`: gunicorn "
        f"`--config gunicorn.conf.py --workers {args.workers}` for each app, {model} workers (the service's default) "
        f"but for the classic service's sync ones, wrk {args.threads} threads × {args.connections} connections, "
        f"{args.duration} s per run, {n} interleaved round{'s' if n > 1 else ''}, median (min–max). "
        "The figures are relative: compare the ratios, not the numbers.",
        "",
        "Straight at gunicorn (Cloud Run's path: no nginx in front):",
        "",
        row("", (SERVICES[k].title for k in DIRECT)),
        "|---|" + "---:|" * len(DIRECT),
        row("requests/s, one customer", (single[k].rate() for k in DIRECT)),
        row("p50 / p99 latency, one customer", (single[k].latency() for k in DIRECT)),
        row("server CPU per request, one customer", (us(single[k].cpu) for k in DIRECT)),
        row(
            f"customers/s, {BATCH_SIZE:,}-customer batches",
            (
                batch.rate(BATCH_SIZE),
                "no batch endpoint",
                "no model",
                "no model",
                "not measured",
                challenger_batch.rate(BATCH_SIZE),
            ),
        ),
        row(f"p50 / p99 latency, {BATCH_SIZE:,}-customer batch", (batch.latency(), *empty)),
        row("server CPU per customer in batches", (us(batch.cpu / BATCH_SIZE), *empty)),
        row("requests/s, one whole dataset row (its own spelling)", (raw_single.rate(), *empty)),
        row(f"customers/s, {BATCH_SIZE:,} whole dataset rows", (raw_batch.rate(BATCH_SIZE), *empty)),
        row("requests/s, POST /explain, one customer", (explain_single.rate(), *empty)),
        row(
            f"customers/s, POST /explain, {BATCH_SIZE:,}-customer batches",
            (explain_batch.rate(BATCH_SIZE), *empty),
        ),
        *(
            row(
                f"median time: refuse {REFUSED:,} customers of {kind} ({mib(sent)}) / score {REFUSED:,} "
                f"({mib(valid)}); the refusal's size",
                (f"{ms(refused_s)} / {ms(valid_s)}; {size:,} bytes", *empty),
            )
            for kind, (refused_s, valid_s, sent, valid, size) in refusal.items()
        ),
        row("import time of the app module", (f"{imports[k][0] * 1000:.0f} ms" for k in DIRECT)),
        row("peak RSS of that import", (f"{imports[k][1]:.1f} MiB" for k in DIRECT)),
        row(f"start to first answer ({args.workers} workers)", (f"{startup[k]:.2f} s" for k in DIRECT)),
        row("RSS per worker after the load", (f"{memory[k][0]:.1f} MiB" for k in DIRECT)),
        row("PSS per worker after the load", (f"{memory[k][1]:.1f} MiB" for k in DIRECT)),
        "",
        "Behind Elastic Beanstalk's nginx (the production path: each app behind an nginx of its own, with the "
        "project's copy of the platform's nginx.conf and .platform files; keep-alive from wrk to nginx):",
        "",
        row("", (SERVICES[k].title for k in PROXIED)),
        "|---|" + "---:|" * len(PROXIED),
        row("requests/s, one customer", (single[k].rate() for k in PROXIED)),
        row("p50 / p99 latency, one customer", (single[k].latency() for k in PROXIED)),
        row("server CPU per request (gunicorn and nginx), one customer", (us(single[k].cpu) for k in PROXIED)),
        "",
        f"A bare WSGI app answering a constant behind the same nginx does "
        f"{paired(results, 'bare_nginx', 'classic_nginx', 'rps'):.2f}× the classic service's requests/s "
        f"({paired(results, 'classic_nginx', 'bare_nginx', 'cpu'):.2f}× by server CPU): no app served this way here "
        "can do more.",
        "",
    ]

    # Each target as (what, measured ratio, the same ratio from server CPU time, wanted, met). A ratio between two
    # apps is paired(): within each round, then the median.
    def pair(a: str, b: str, scale: float = 1) -> tuple[float, float]:
        """a's requests/s over b's, and the same from server CPU time."""
        return scale * paired(results, a, b, "rps"), scale * paired(results, b, a, "cpu")

    targets = [
        (
            "behind EB's nginx, one customer: requests/s vs the classic service's",
            *pair("ours_nginx", "classic_nginx"),
            3.0,
            True,
        ),
        (
            "behind EB's nginx, one customer: p99 latency vs this service's on sync workers",
            paired(results, "ours_nginx", "ours_sync_nginx", "p99"),
            None,
            1.0,
            False,
        ),
        ("straight at gunicorn, one customer: requests/s vs a bare WSGI app's", *pair("ours", "bare"), 0.9, True),
        ("one customer: requests/s vs the classic service", *pair("ours", "classic"), 2.0, True),
        ("one customer: requests/s vs the floor", *pair("ours", "floor"), 0.85, True),
        (
            "a shadow challenger, one customer: requests/s vs the service without",
            *pair("challenger", "ours"),
            0.85,
            True,
        ),
        (
            f"a shadow challenger, {BATCH_SIZE:,}-customer batches: customers/s vs the service without",
            *pair("challenger_batch", "batch"),
            0.85,
            True,
        ),
        ("one customer: p99 latency vs the floor's", paired(results, "ours", "floor", "p99"), None, 1.5, False),
        (
            "request IDs, metrics and access log: requests/s vs the service without them",
            *pair("ours", "unobserved"),
            0.95,
            True,
        ),
        ("drift counts, one customer: requests/s vs without them", *pair("ours", "undrifted_single"), 0.95, True),
        (
            f"drift counts, {BATCH_SIZE:,}-customer batches: customers/s vs without them",
            *pair("batch", "undrifted_batch"),
            0.9,
            True,
        ),
        (
            f"{BATCH_SIZE:,}-customer batches: customers/s vs one-customer requests/s",
            *pair("batch", "ours", BATCH_SIZE),
            50,
            True,
        ),
        ("a whole dataset row: requests/s vs the model's spelling", *pair("raw_single", "ours"), 0.9, True),
        (
            f"{BATCH_SIZE:,} whole dataset rows: customers/s vs the model's spelling",
            *pair("raw_batch", "batch"),
            0.9,
            True,
        ),
        ("/explain, one customer: requests/s vs /predict's", *pair("explain_single", "ours"), 0.8, True),
        (
            f"/explain, {BATCH_SIZE:,}-customer batches: customers/s vs /predict's",
            *pair("explain_batch", "batch"),
            0.5,
            True,
        ),
        *(
            (f"refusing {REFUSED:,} customers of {kind}: time vs scoring {REFUSED:,}", r[0] / r[1], None, 1.0, False)
            for kind, r in refusal.items()
        ),
        *(
            (f"refusing {REFUSED:,} customers of {kind}: answer size in KiB", r[4] / 1024, None, 64, False)
            for kind, r in refusal.items()
        ),
        ("import of predict.py: time vs the classic's", imports["ours"][0] / imports["classic"][0], None, 1.0, False),
        (
            "import of predict.py: peak RSS vs the classic's",
            imports["ours"][1] / imports["classic"][1],
            None,
            1.0,
            False,
        ),
    ]
    lines += ["| target | measured | by server CPU | wanted | |", "|---|---:|---:|---:|---|"]
    for what, measured, cpu_ratio, wanted, at_least in targets:
        met = measured >= wanted if at_least else measured <= wanted
        cpu_cell = f"{cpu_ratio:.2f}×" if cpu_ratio is not None else ""
        sign = "≥" if at_least else "≤"
        unit = "" if "KiB" in what else "×"
        lines.append(
            f"| {what} | {measured:.2f}{unit} | {cpu_cell} | {sign} {wanted}{unit} | {'PASS' if met else 'FAIL'} |"
        )
    lines += [
        "",
        "*by server CPU*: the same ratio from the CPU time the gunicorn processes (and nginx, behind it) used per "
        "request (or per customer), which other load on the machine disturbs far less than requests/s.",
    ]
    bad = {name: sum(r.bad for r in runs) for name, runs in results.items() if any(r.bad for r in runs)}
    if bad:
        lines += ["", "Warning: failed requests during the runs: " + ", ".join(f"{k} {v}" for k, v in bad.items())]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    wrk = ensure_wrk()
    info = machine()
    env = server_env()
    single = json.dumps(SAMPLE_CUSTOMER).encode()
    servers: dict[str, Server] = {}
    try:
        batch = batch_body()
        raw_single_body = json.dumps(raw_rows(1)[0]).encode()
        # Compact JSON, as pandas writes the model-spelled batch: the bodies differ only in what they say.
        raw_batch = json.dumps(raw_rows(BATCH_SIZE), separators=(",", ":")).encode()
        refused, valid = refusal_bodies()
        print(f"timing imports ({args.imports} fresh processes per app)...", file=sys.stderr)
        imports = measure_imports(args.imports, env)
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            tmp = Path(tmp)
            scripts = {}
            bodies = {"single": single, "batch": batch, "raw_single": raw_single_body, "raw_batch": raw_batch}
            bodies |= {"explain_single": single, "explain_batch": batch}
            for kind, body in bodies.items():
                (tmp / f"{kind}.json").write_bytes(body)
                endpoint = "/explain" if kind.startswith("explain") else "/predict"
                (tmp / f"{kind}.lua").write_text(WRK_SCRIPT.format(path=tmp / f"{kind}.json", endpoint=endpoint))
                scripts[kind] = tmp / f"{kind}.lua"
            for name in APPS:
                servers[name] = start_server(name, args.workers, env, tmp, single)
            check_answers(servers, single, batch, raw_batch)
            # The plan: one customer to each app in turn, then our batches and the dataset's rows, round after round.
            # Without the drift counts right after with them: the closest in time, the fairest ratio.
            plan = [(name, name, "single") for name in SERVICES]
            plan.insert(1, ("undrifted_single", UNDRIFTED, "single"))
            plan += [("batch", "ours", "batch"), ("undrifted_batch", UNDRIFTED, "batch")]
            plan += [("challenger_batch", "challenger", "batch")]
            plan += [(kind, "ours", kind) for kind in ("raw_single", "raw_batch", "explain_single", "explain_batch")]
            print("warming up...", file=sys.stderr)
            for _, name, kind in plan:
                run_wrk(wrk, servers[name], scripts[kind], 1, args)
            results = {key: [] for key, _, _ in plan}
            for round_ in range(1, args.rounds + 1):
                # Every other round in reverse: no app always runs right after the same one (the drift pairs).
                for key, name, kind in plan if round_ % 2 else plan[::-1]:
                    run = run_wrk(wrk, servers[name], scripts[kind], args.duration, args)
                    results[key].append(run)
                    print(
                        f"round {round_}/{args.rounds} {key:8} {run.rps:9,.0f} req/s  p50 {ms(run.p50)}  "
                        f"p99 {ms(run.p99)}  CPU {run.cpu * 1e6:,.0f} us/request  {' '.join(run.notes)}",
                        file=sys.stderr,
                    )
            print(f"timing the refusal of {REFUSED:,} invalid customers...", file=sys.stderr)
            refusal = time_refusals(servers["ours"], refused, valid, 5 * args.rounds)
            memory = {name: worker_memory(servers[name].process.pid) for name in DIRECT}
            startup = {name: server.startup for name, server in servers.items()}
            for server in servers.values():
                if server.process.poll() is not None or (server.proxy and server.proxy.process.poll() is not None):
                    raise BenchError(f"{server.name} exited during the run:\n{server.log_tail()}")
    except (BenchError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        for server in servers.values():
            server.stop()
    table = report(results, imports, memory, startup, info, refusal, args)
    print(table)
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
