"""What the prediction log costs /predict: this service without it, with SQLite and with PostgreSQL, under the flags
and load of bench/run.py (gunicorn, wrk), interleaved round by round; then each log at the full single-customer rate
for --keep-up seconds, to see whether its writer keeps up (nothing dropped, everything written).

python -m bench.predictionlog [--quick] [--duration S] [--rounds N] [--keep-up S] [--out FILE]

PostgreSQL is a fresh cluster in a temporary folder (tests/postgres.py: Debian's server, initdb, pg_ctl).
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.run import (
    WRK_SCRIPT,
    BenchError,
    batch_body,
    ensure_wrk,
    parse_args,
    run_wrk,
    server_env,
    start_server,
)
from churn.model.schema import SAMPLE_CUSTOMER
from devtools import stop, wait_for
from tests.helpers import samples
from tests.postgres import running_postgres

KINDS = ("single", "batch")


def exposition(server) -> dict:
    return samples(urllib.request.urlopen(server.url.replace("/predict", "/metrics"), timeout=10).read().decode())


def counters(server) -> dict[str, float]:
    found = exposition(server)
    return {name: found.get((f"churn_prediction_log_{name}_total", ()), 0.0) for name in ("written", "dropped")}


def customers_answered(server) -> float:
    return exposition(server).get(("churn_predictions_total", ()), 0.0)


def keep_up(wrk: str, server, script: Path, seconds: int, args) -> dict:
    """One customer a request at full rate for seconds; then what the log wrote and dropped of what was answered."""
    before = customers_answered(server), counters(server)
    run = run_wrk(wrk, server, script, seconds, args)
    answered = customers_answered(server) - before[0]
    wait_for(lambda: sum(counters(server).values()) - sum(before[1].values()) >= answered, timeout=30)
    after = counters(server)
    written, dropped = (after[name] - before[1][name] for name in ("written", "dropped"))
    return {"rps": run.rps, "answered": answered, "written": written, "dropped": dropped}


def main(argv=None) -> int:
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--keep-up", type=int, default=60, help="seconds of the writer keep-up run (default 60)")
    known, rest = own.parse_known_args(argv)
    args = parse_args(rest)  # bench/run.py's options: --quick, --duration, --rounds, --workers, --out...
    keep_up_seconds = min(known.keep_up, 10) if args.quick else known.keep_up
    wrk = ensure_wrk()
    servers = {}
    with tempfile.TemporaryDirectory(prefix="bench-log-") as tmp, running_postgres() as postgres:
        tmp = Path(tmp)
        scripts = {}
        for kind, body in (("single", json.dumps(SAMPLE_CUSTOMER).encode()), ("batch", batch_body())):
            (tmp / f"{kind}.json").write_bytes(body)
            (tmp / f"{kind}.lua").write_text(WRK_SCRIPT.format(path=tmp / f"{kind}.json", endpoint="/predict"))
            scripts[kind] = tmp / f"{kind}.lua"
        logs = {"off": None, "sqlite": f"sqlite:///{tmp / 'log.db'}", "postgresql": postgres.url}
        try:
            for variant, url in logs.items():
                env = server_env() | ({"CHURN_PREDICTION_LOG": url} if url else {})
                (tmp / variant).mkdir()
                probe = (tmp / "single.json").read_bytes()
                servers[variant] = start_server("ours", args.workers, env, tmp / variant, probe)
            for variant in logs:
                for kind in KINDS:
                    run_wrk(wrk, servers[variant], scripts[kind], 1, args)  # warm-up
            rps = {(variant, kind): [] for variant in logs for kind in KINDS}
            for round_ in range(1, args.rounds + 1):
                for kind in KINDS:
                    for variant in logs:
                        run = run_wrk(wrk, servers[variant], scripts[kind], args.duration, args)
                        rps[variant, kind].append(run.rps)
                        print(f"round {round_} {kind:6} log {variant:10} {run.rps:9,.0f} req/s", file=sys.stderr)
            kept = {}
            for variant in ("sqlite", "postgresql"):
                print(f"{variant}: {keep_up_seconds} s at the full single-customer rate...", file=sys.stderr)
                kept[variant] = keep_up(wrk, servers[variant], scripts["single"], keep_up_seconds, args)
        except BenchError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        finally:
            for server in servers.values():
                stop(server.process)
    table = report(rps, kept, keep_up_seconds, args)
    print(table)
    if args.out:  # after bench/run.py's table, which make bench writes to the same file
        with args.out.open("a") as out:
            out.write("\n" + table)
    return 0


def report(rps: dict, kept: dict, seconds: int, args) -> str:
    median = {key: statistics.median(values) for key, values in rps.items()}
    lines = [
        f"Prediction log cost, {args.rounds} rounds of {args.duration} s, {args.workers} workers, "
        f"{time.strftime('%Y-%m-%d')}",
        "",
        "| /predict | log off (req/s) | SQLite (req/s) | ratio | PostgreSQL (req/s) | ratio |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for kind, label in (("single", "one customer"), ("batch", "1,000 customers")):
        off, lite, pg = (median[variant, kind] for variant in ("off", "sqlite", "postgresql"))
        # Each ratio the median of the ratios within the rounds, as bench/run.py's targets (paired).
        lite_ratio, pg_ratio = (
            statistics.median(on / without for on, without in zip(rps[log, kind], rps["off", kind], strict=True))
            for log in ("sqlite", "postgresql")
        )
        lines.append(f"| {label} | {off:,.0f} | {lite:,.0f} | {lite_ratio:.2f}× | {pg:,.0f} | {pg_ratio:.2f}× |")
    lines += ["", f"Writer keep-up, one customer a request at full rate for {seconds} s:", ""]
    lines += ["| log | req/s | customers answered | written | dropped |", "| --- | --- | --- | --- | --- |"]
    for variant, k in kept.items():
        lines.append(
            f"| {variant} | {k['rps']:,.0f} | {k['answered']:,.0f} | {k['written']:,.0f} | {k['dropped']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
