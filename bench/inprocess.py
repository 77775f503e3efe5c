"""What monitoring costs a 1,000-customer batch, as CPU time in this one process, which other load on a shared machine
disturbs far less than requests/s: answering it as /predict does (read, validate, score, JSON), the drift counts
(churn.monitor.live), and the prediction log (its pack, then its write to SQLite, or to PostgreSQL: the client's
CPU here, and the server's own, a local cluster, beside it; and what unpacking it costs the log's readers). Then a
one-customer /predict through the whole WSGI app, with and without request IDs, metrics and the access line: what
the app costs a request, without a server.

python -m bench.inprocess [--quick] [--repeat N] [--out FILE]   (make bench runs it third, with bench/run.py's options:
those it has no use for are ignored)
"""

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
from gunicorn.config import Config
from gunicorn.http.message import Request
from gunicorn.http.unreader import IterUnreader
from gunicorn.http.wsgi import Response, create

from bench.run import batch_body
from churn.model.schema import SAMPLE_CUSTOMER
from churn.monitor import packed
from churn.monitor.ids import uuid7s
from churn.monitor.store import Store
from churn.serve import plainhttp
from churn.serve.routes import PREDICTOR
from predict import app
from tests.postgres import running_postgres


def cpu_ms(action, repeat: int) -> float:
    """The median CPU time of action(), in ms, after two calls to warm it."""
    action(), action()
    times = []
    for _ in range(repeat):
        start = time.process_time()
        action()
        times.append(time.process_time() - start)
    return statistics.median(times) * 1000


def postgres_cpu() -> float:
    """CPU seconds PostgreSQL's processes on this machine have used."""
    total = 0.0
    for process in psutil.process_iter(["name"]):
        if (process.info["name"] or "").startswith("postgres"):
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                continue
    return total


def measure(repeat: int) -> list[tuple[str, float]]:
    predictor = app.extensions[PREDICTOR]
    endpoint, drift = predictor.endpoints["predict"], predictor.drift
    body = batch_body()
    observers = endpoint.drift, endpoint.prediction_log
    endpoint.drift = endpoint.prediction_log = None  # answering alone
    try:
        answer = answer_of(endpoint, body)
        answering = cpu_ms(lambda: answer_of(endpoint, body), repeat)
    finally:
        endpoint.drift, endpoint.prediction_log = observers
    queued = [packed.queued("predict", answer)]
    costs = [
        ("answering it (/predict without drift counts or log)", answering),
        ("drift counts", cpu_ms(lambda: drift.observe(answer.customers, answer.probabilities, answer.columns), repeat)),
        ("prediction log: queueing it (on the request path)", cpu_ms(lambda: packed.queued("predict", answer), repeat)),
        ("prediction log: its pack", cpu_ms(lambda: packed.pack(queued, "bench", 0.5), repeat)),
    ]
    with tempfile.TemporaryDirectory() as folder:
        store = Store(f"sqlite:///{folder}/log.db")
        costs.append(("prediction log: writing it to SQLite", writing(store, queued, repeat)))
        costs.append(("unpacking it in SQLite (a reader's, not the service's)", unpacking(store, queued, repeat)))
        store.close()
    with running_postgres() as postgres:
        store = Store(postgres.url)
        before = postgres_cpu()
        costs.append(("prediction log: writing it to PostgreSQL (client)", writing(store, queued, repeat)))
        costs.append(("the PostgreSQL server's own", (postgres_cpu() - before) / (repeat + 2) * 1000))
        costs.append(("unpacking it in PostgreSQL (a reader's, client)", unpacking(store, queued, repeat)))
        store.close()
    return costs


def answer_of(endpoint, body: bytes):
    """What the /predict endpoint makes of a JSON body (its answer, before the HTTP layer)."""
    environ = {"CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body))}
    return endpoint(environ | {"wsgi.input": io.BytesIO(body)})


ONE_CUSTOMER_CALLS = 200  # requests in each timed call: one takes tens of microseconds


def one_customer(repeat: int) -> list[tuple[str, float]]:
    """The CPU µs of a one-customer /predict through the whole WSGI app, and without its observation."""
    body = json.dumps(SAMPLE_CUSTOMER).encode()

    def through(wsgi) -> float:
        def calls():
            for _ in range(ONE_CUSTOMER_CALLS):
                for _chunk in wsgi(wsgi_environ(body), lambda status, headers, exc_info=None: None):
                    pass

        return cpu_ms(calls, repeat) * 1000 / ONE_CUSTOMER_CALLS

    with open(os.devnull, "w") as nowhere, contextlib.redirect_stdout(nowhere):  # the access lines
        return [
            ("/predict, one customer, through the whole app", through(app.wsgi_app)),
            ("the same without request IDs, metrics and the access line", through(app.extensions["churn.unobserved"])),
        ]


def http_layers(repeat: int) -> list[tuple[str, float]]:
    """The CPU µs of what gunicorn's objects do with a one-customer request to /predict and its answer, and what the
    worker's plain path (churn.serve.plainhttp) does instead."""
    body = json.dumps(SAMPLE_CUSTOMER).encode()
    head = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:9696\r\nUser-Agent: wrk\r\nContent-Type: application/json\r\n"
    request = head + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    cfg, client, server = Config(), ("127.0.0.1", 50000), ("127.0.0.1", 9696)
    started = []

    def start_response(status, fields, exc_info=None):
        started.extend([status, fields])

    with open(os.devnull, "w") as nowhere, contextlib.redirect_stdout(nowhere):  # the access line
        answer = app.wsgi_app(wsgi_environ(body), start_response)
    status, headers = started
    parsed = Request(cfg, IterUnreader([request]), client, 1)
    plain = plainhttp.PlainRequests(cfg, access_log=False)

    def gunicorn_response():
        response = Response(parsed, SimpleNamespace(sendall=[].append), cfg)  # sent nowhere: no system call
        response.start_response(status, list(headers))
        for chunk in answer:
            response.write(chunk)
        response.close()

    def timed(action) -> float:
        def calls():
            for _ in range(ONE_CUSTOMER_CALLS):
                action()

        return cpu_ms(calls, repeat) * 1000 / ONE_CUSTOMER_CALLS

    def plain_answer():
        return plainhttp.answer(status, headers, answer, False, "a date")

    def gunicorn_request():
        return Request(cfg, IterUnreader([request]), client, 1)

    return [
        ("gunicorn: parsing the request (its Request)", timed(gunicorn_request)),
        ("gunicorn: the environ (wsgi.create)", timed(lambda: create(parsed, None, client, server, cfg))),
        ("gunicorn: the answer's bytes (its Response)", timed(gunicorn_response)),
        ("the worker's plain path: the environ", timed(lambda: plain.environ(request, None, client, server))),
        ("the worker's plain path: the answer's bytes", timed(plain_answer)),
    ]


def wsgi_environ(body: bytes) -> dict:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/predict",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "9696",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def fresh_packs(queued: list, repeat: int):
    """Packs of the queued answer, made before they are timed, under new prediction ids each, so that each pack
    unpacks into new rows: one for each call cpu_ms makes."""
    new_ids = [queued[0]._replace(prediction_ids=uuid7s(len(queued[0].prediction_ids))) for _ in range(repeat + 2)]
    made = [packed.pack([answer], "bench", 0.5) for answer in new_ids]
    return iter(made)


def writing(store: Store, queued: list, repeat: int) -> float:
    """The CPU ms of writing a pack, each made before it is timed."""
    packs = fresh_packs(queued, repeat)
    return cpu_ms(lambda: store.write_packed(next(packs)), repeat)


def unpacking(store: Store, queued: list, repeat: int) -> float:
    """The CPU ms of unpacking a pack: repeat packs written, then unpacked together."""
    store.unpack()  # what an earlier measure wrote
    for pack in fresh_packs(queued, repeat - 2):
        store.write_packed(pack)
    start = time.process_time()
    store.unpack()
    return (time.process_time() - start) / repeat * 1000


def table(costs: list[tuple[str, float]]) -> str:
    answering = costs[0][1]
    lines = ["| a 1,000-customer batch | CPU time | vs answering it |", "|---|---:|---:|"]
    lines += [f"| {what} | {ms:.2f} ms | {ms / answering:.2f}× |" for what, ms in costs]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=50, help="timed calls of each (default 50; the median is shown)")
    parser.add_argument("--quick", action="store_true", help="5 timed calls of each (a smoke run)")
    parser.add_argument("--out", type=Path, help="also append the Markdown table to this file")
    args, _ = parser.parse_known_args(argv)
    if args.quick:
        args.repeat = 5
    heading = f"CPU time in one process, median of {args.repeat} calls (`python -m bench.inprocess`):"
    singles = one_customer(args.repeat) + http_layers(args.repeat)
    singles = "\n".join(f"| {what} | {us:.1f} µs |" for what, us in singles)
    text = f"{heading}\n\n{table(measure(args.repeat))}\n\n| a request | CPU time |\n|---|---:|\n{singles}\n"
    print(text)
    if args.out:
        with args.out.open("a") as out:
            out.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
