"""One JSON object per log line on stdout, each carrying the request ID of the request it belongs to."""

import atexit
import functools
import json
import logging
import os
import re
import select
import sys
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass

from churn import metrics

# A request ID a client sends is kept when it matches this (what a header and a log line carry unchanged).
REQUEST_ID_PATTERN = "[A-Za-z0-9._:-]{1,128}"


@dataclass(slots=True)
class RequestRecord:
    """What a request's access line reports beside its status: its ID, how many customers it scored, and the
    version of the model that served it."""

    id: str
    customers: int = 0
    model_version: str = ""


# Set for the duration of each request (per thread under waitress and gthread, per worker under sync workers).
current_request: ContextVar[RequestRecord | None] = ContextVar("current_request", default=None)


def request_id() -> str | None:
    record = current_request.get()
    return record.id if record else None


def count_customers(customers: int) -> None:
    """Called by the endpoint that scored them, for the request's access line."""
    if record := current_request.get():
        record.customers = customers


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (current := request_id()) is not None:
            entry["request_id"] = current
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


@functools.lru_cache(maxsize=4)
def _whole_second(seconds: int) -> str:
    # strftime is a third of the access line's cost; it changes once a second.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def timestamp(seconds: float) -> str:
    return f"{_whole_second(int(seconds))}.{int(seconds * 1000) % 1000:03d}Z"


access_log = logging.getLogger("churn.access")


class AccessLines:
    """Access lines batched into writes of whole lines, each write at most PIPE_BUF bytes.

    A write to stdout is a system call, the largest single cost of a request here. As nginx's access_log
    does with buffer= and flush=, lines wait until about 4 KiB have gathered, or for at most FLUSH_SECONDS,
    or for the process to exit. A write of up to PIPE_BUF bytes to a pipe is atomic, so lines from several
    workers sharing stdout never interleave; a worker killed with SIGKILL loses at most a second of lines.
    """

    FLUSH_SECONDS = 1.0

    def __init__(self, limit: int = select.PIPE_BUF):
        self.limit = limit
        self.lines: list[str] = []
        self.size = 0
        self.lock = threading.Lock()
        self.flusher_started = False
        # Threads do not survive a fork, and lines inherited from the parent are the parent's to write.
        os.register_at_fork(after_in_child=self.forget)

    def forget(self) -> None:
        self.lock = threading.Lock()
        self.lines.clear()
        self.size = 0
        self.flusher_started = False

    def add(self, line: str) -> None:
        if not self.flusher_started:
            self.start_flusher()
        with self.lock:
            if self.size + len(line) > self.limit:
                self.write_pending()
            self.lines.append(line)
            self.size += len(line)

    def write_pending(self) -> None:
        if self.lines:
            try:
                sys.stdout.write("".join(self.lines))
                sys.stdout.flush()
            except (OSError, ValueError):  # a full disk, a closed pipe or stream: the lines go, the answers stay
                metrics.count_dropped_lines(len(self.lines))
            self.lines.clear()
            self.size = 0

    def flush(self) -> None:
        with self.lock:
            self.write_pending()

    def start_flusher(self) -> None:
        self.flusher_started = True
        threading.Thread(target=self.flush_every_second, name="access-log-flush", daemon=True).start()

    def flush_every_second(self) -> None:
        while True:
            time.sleep(self.FLUSH_SECONDS)
            self.flush()


access_lines = AccessLines()
atexit.register(access_lines.flush)


# What a client chooses is cut to these lengths in the access line, so that the line stays within one atomic
# write (PIPE_BUF, 4096 bytes) even when every character is escaped (12 bytes for one outside the BMP).
# The request ID is capped where it is accepted (128 characters).
MAX_LOGGED_PATH = 256
MAX_LOGGED_METHOD = 16


def log_request(method: str, path: str, status: int, duration: float, record: RequestRecord) -> None:
    """The access line: the same JSON object the formatter would make, written without a LogRecord.

    logging's record, formatter and handler cost several times what the prediction does; this line is
    written on every request, so it is built directly. LOG_LEVEL above INFO still turns it off.
    A path or method longer than its cap is cut, and the line says so with "truncated": true.
    """
    if not access_log.isEnabledFor(logging.INFO):
        return
    truncated = ""
    if len(path) > MAX_LOGGED_PATH or len(method) > MAX_LOGGED_METHOD:
        path, method, truncated = path[:MAX_LOGGED_PATH], method[:MAX_LOGGED_METHOD], ',"truncated":true'
    access_lines.add(
        f'{{"time":"{timestamp(time.time())}","level":"info","logger":"churn.access","message":"request",'
        f'"request_id":"{record.id}","method":{json.dumps(method)},"path":{json.dumps(path)},'
        f'"status":{status},"duration_ms":{duration * 1000:.3f},"customers":{record.customers},'
        f'"model_version":"{record.model_version}"{truncated}}}\n'
    )


# An ANSI escape sequence (CSI: ESC [ parameters, intermediates, final byte), such as a colour.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")


class PlainText(logging.Filter):
    """Removes ANSI escapes from a record's message.

    werkzeug's development server (`python predict.py`) colours each request's status and its start-up warning
    whether or not a terminal reads them; in a JSON line they are noise to whatever parses the log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "\x1b" in message:
            record.msg, record.args = ANSI_ESCAPE.sub("", message), None
        return True


plain_text = PlainText()


def log_server_banner(debug: bool, app_import_path: str | None) -> None:
    logging.getLogger("werkzeug").info(
        "Serving Flask app %r (debug mode %s)", app_import_path, "on" if debug else "off"
    )


class StdoutHandler(logging.StreamHandler):
    """A StreamHandler on whatever sys.stdout is when it writes, as the access lines are: a stream replaced since
    (a test runner's capture, closed at its end) is not written to after it closes."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _stream) -> None:  # StreamHandler.__init__ sets it
        pass


def configure_logging(level: str = "INFO") -> None:
    handler = StdoutHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("werkzeug").addFilter(plain_text)  # one instance: a second call adds nothing
    # Flask's development server prints its banner with click.echo, beside logging: as a log line it is JSON too.
    import flask.cli

    flask.cli.show_server_banner = log_server_banner
