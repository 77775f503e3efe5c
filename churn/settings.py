"""Every environment variable the service, gunicorn.conf.py, train.py, score.py and the client read: typed, checked
and documented here, each default written once.

A plain dataclass, not pydantic-settings: the service's image installs only what serving imports, and this needs no
more than the standard library. `python -m churn.settings` prints the configuration table of docs/configuration.md
(a test checks that the two agree). A bad value stops the start with one line that names the variable.
"""

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_FILE_NAME = "model_C=1.0.bin"
# Printable ASCII without space: what a header carries unchanged through every client and proxy.
KEY_CHARACTERS = frozenset(chr(c) for c in range(0x21, 0x7F))
# GUNICORN_WORKER_CLASS's values, and the class gunicorn loads for each: gthread as churn/serve/worker.py extends it.
GUNICORN_WORKER_CLASSES = {"gthread": "churn.serve.worker.BalancedThreadWorker", "sync": "sync"}
WORKER_CLASSES = tuple(GUNICORN_WORKER_CLASSES)
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The CPUs this process may run on, fewer when its cgroup's quota (a container's `--cpus`) allows less time:
    what the instance or container really has, where os.cpu_count() counts the host's."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 here: the CPUs it may run on
        pass
    return cpus


LOG_SCHEMES = ("sqlite:///", "postgresql://")


class SettingError(ValueError):
    """A variable whose value cannot be used; the message names it and says what it takes."""


def setting(env: str, default, doc: str, **extra):
    return field(default=default, metadata={"env": env, "doc": doc, **extra})


@dataclass(frozen=True)
class Settings:
    threshold: float = setting("CHURN_THRESHOLD", 0.5, "`churn` is true at or above this probability (0 to 1)")
    max_customers: int = setting("CHURN_MAX_CUSTOMERS", 10_000, "customers in one request; more is a 413")
    max_body_bytes: int = setting(
        "CHURN_MAX_BODY_BYTES",
        16 * 1024 * 1024,
        "request body size in bytes; more is a 413. Behind Elastic Beanstalk, nginx's `client_max_body_size` in "
        "`.platform/nginx/conf.d/churn_http.conf` must be raised with it",
    )
    # A key must never reach a log line or a repr.
    api_keys: frozenset[str] = field(
        default=frozenset(),
        repr=False,
        metadata={
            "env": "CHURN_API_KEYS",
            "doc": "comma-separated API keys a request must carry one of; unset, the service is open",
            "shown": "unset: open",
        },
    )
    api_keys_file: Path | None = setting(
        "CHURN_API_KEYS_FILE", None, "a file of API keys, one a line, instead of `CHURN_API_KEYS`; SIGHUP re-reads it"
    )
    model_file: Path = setting(
        "MODEL_FILE",
        ROOT / MODEL_FILE_NAME,
        "the model the service loads at start, and again on SIGHUP under gunicorn (docs/models.md); in the "
        "image: the build argument of that name",
        shown=f"`{MODEL_FILE_NAME}` beside `predict.py`",
    )
    challenger_model_file: Path | None = setting(
        "CHURN_CHALLENGER_MODEL_FILE",
        None,
        "a second model that scores, in the shadow, every customer the served one answers: its scores only reach "
        "/metrics and the prediction log, never an answer (docs/models.md). One that cannot be loaded is "
        "logged and left out; the served model serves regardless",
        shown="unset: none",
    )
    log_level: str = setting("LOG_LEVEL", "INFO", "`WARNING` turns the per-request log line off")
    port: int = setting("PORT", 9696, "the port gunicorn binds on all interfaces, and the client's default")
    workers: int = setting(
        "WEB_CONCURRENCY",
        available_cpus(),
        "gunicorn worker processes: one a CPU serves as much as the machine can",
        shown="the CPUs available (affinity, and a container's CPU quota)",
    )
    worker_class: str = setting(
        "GUNICORN_WORKER_CLASS",
        "gthread",
        "`gthread`: threads in each worker, connections kept open between requests (nginx reuses them) and spread "
        "evenly over the workers, a request wholly arrived on one answered by the worker's own thread, a plain POST "
        "without gunicorn's request objects (`churn/serve/worker.py`, `churn/serve/plainhttp.py`); `sync`: one request "
        "at a time in each worker, a new connection for every request. Choose here: gunicorn's own `--worker-class` "
        "gives its plain gthread for either, as gunicorn does with `sync` whenever `GUNICORN_THREADS` is above 1",
    )
    threads: int = setting(
        "GUNICORN_THREADS",
        2,
        "requests a `gthread` worker serves at once: a slow client holds one thread, an idle connection none; more "
        "threads contend for the worker's one interpreter lock, which lengthens the slowest answers",
    )
    keepalive: int = setting(
        "GUNICORN_KEEPALIVE",
        75,
        "seconds a `gthread` worker keeps an idle connection open: longer than nginx keeps its idle connections to "
        "the service (`keepalive_timeout`, 60 s), so that nginx, not gunicorn, closes them; 0: a new connection for "
        "every request",
    )
    timeout: int = setting("GUNICORN_TIMEOUT", 30, "seconds a silent worker lives before it is killed and replaced")
    graceful_timeout: int = setting(
        "GUNICORN_GRACEFUL_TIMEOUT", 8, "seconds in-flight requests get to finish on SIGTERM (under `docker stop`'s 10)"
    )
    max_requests: int = setting("GUNICORN_MAX_REQUESTS", 100_000, "recycle a worker after about this many requests")
    max_requests_jitter: int = setting(
        "GUNICORN_MAX_REQUESTS_JITTER", 10_000, "a random share of that, so that workers do not recycle together"
    )
    metrics_dir: Path | None = setting(
        "PROMETHEUS_MULTIPROC_DIR",
        None,
        "where the workers' metrics files live; gunicorn.conf.py makes a temporary one when unset",
        shown="unset: a new temporary folder",
    )
    data: Path | None = setting(
        "CHURN_DATA",
        None,
        "the dataset for train.py and the tests: the CSV, or the folder holding it",
        shown="unset: `../shared/data/`, then `data/`",
    )
    # A PostgreSQL URL may hold a password: never in a repr or a log line.
    prediction_log: str | None = field(
        default=None,
        repr=False,
        metadata={
            "env": "CHURN_PREDICTION_LOG",
            "doc": "where each answered customer is logged: `sqlite:///path.db` or `postgresql://user:pw@host/db`; "
            "`monitor.py` reads it too",
            "shown": "unset: no log",
        },
    )
    prediction_log_queue: int = setting(
        "CHURN_PREDICTION_LOG_QUEUE",
        10_000,
        "customers a worker holds for the log while the store is slow or down; more are dropped and counted",
    )
    url: str | None = setting(
        "CHURN_URL", None, "the service `predict_test.py` calls", shown="unset: `http://localhost:$PORT`"
    )
    client_api_key: str | None = field(
        default=None,
        repr=False,
        metadata={"env": "CHURN_API_KEY", "doc": "the API key `predict_test.py` sends", "shown": "unset: none"},
    )

    def __post_init__(self):
        # A misconfigured service should refuse to start, not answer every request wrongly.
        if not 0 <= self.threshold <= 1:
            raise SettingError(f"CHURN_THRESHOLD must be between 0 and 1, not {self.threshold}")
        if self.worker_class not in WORKER_CLASSES:
            raise SettingError(
                f"GUNICORN_WORKER_CLASS must be one of {', '.join(WORKER_CLASSES)}, not {self.worker_class!r}"
            )
        if self.prediction_log is not None and not self.prediction_log.startswith(LOG_SCHEMES):
            raise SettingError(
                f"CHURN_PREDICTION_LOG must start with {' or '.join(LOG_SCHEMES)}, not {self.prediction_log[:12]!r}"
            )
        positive = ("max_customers", "max_body_bytes", "port", "workers", "threads", "timeout", "prediction_log_queue")
        for name in positive:
            if getattr(self, name) < 1:
                raise SettingError(f"{env_name(name)} must be a positive whole number, not {getattr(self, name)}")
        for name in ("keepalive", "graceful_timeout", "max_requests", "max_requests_jitter"):
            if getattr(self, name) < 0:
                raise SettingError(f"{env_name(name)} must be a whole number of 0 or more, not {getattr(self, name)}")

    @classmethod
    def from_env(cls, environ=os.environ) -> "Settings":
        values = {}
        for f in fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is not None and f.name != "api_keys":
                values[f.name] = parse(f.metadata["env"], raw, f.type)
        values["api_keys"] = read_api_keys(environ.get("CHURN_API_KEYS"), values.get("api_keys_file"))
        return cls(**values)

    @classmethod
    def one_from_env(cls, name: str, environ=None):
        """One setting, for what must know it before the others are checked (prometheus_client's folder, at import)."""
        f = next(f for f in fields(cls) if f.name == name)
        raw = (os.environ if environ is None else environ).get(f.metadata["env"])
        return f.default if raw is None else parse(f.metadata["env"], raw, f.type)

    def read_api_keys(self) -> frozenset[str]:
        """The keys as configured now: CHURN_API_KEYS_FILE is read again (a rotated key takes effect)."""
        return read_api_keys(None, self.api_keys_file) if self.api_keys_file else self.api_keys


def env_name(name: str) -> str:
    return next(f.metadata["env"] for f in fields(Settings) if f.name == name)


PARSERS = {int: int, float: float, str: str, Path: Path}


def parse(env: str, raw: str, kind):
    kind = next((k for k in PARSERS if k in getattr(kind, "__args__", (kind,))), str)
    if kind is int and not raw.strip().lstrip("+-").isdigit():
        raise SettingError(f"{env} must be a whole number, not {raw!r}")
    try:
        value = PARSERS[kind](raw.strip() if kind is not str else raw)
    except ValueError:
        raise SettingError(f"{env} must be a number, not {raw!r}") from None
    if kind is float and value != value:
        raise SettingError(f"{env} must be a number, not {raw!r}")
    return value


def read_api_keys(listed: str | None, path: Path | None) -> frozenset[str]:
    """The configured keys; empty when neither variable is set. SettingError on a configuration that would leave
    the service unusable or open by mistake. No message quotes a key."""
    if listed is None and path is None:
        return frozenset()
    if listed is not None and path is not None:
        raise SettingError("Set CHURN_API_KEYS or CHURN_API_KEYS_FILE, not both")
    if path is not None:
        source = f"CHURN_API_KEYS_FILE ({path})"
        try:
            candidates = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise SettingError(f"{source} cannot be read: {getattr(e, 'strerror', None) or type(e).__name__}") from None
    else:
        source = "CHURN_API_KEYS"
        candidates = listed.split(",")
    keys = [key.strip() for key in candidates if key.strip()]
    if not keys:
        raise SettingError(f"{source} is set but holds no key; unset it to leave the service open")
    for number, key in enumerate(keys, 1):
        if not set(key) <= KEY_CHARACTERS:
            raise SettingError(f"Key {number} of {source} has characters other than printable ASCII without spaces")
    return frozenset(keys)


def configuration_table() -> str:
    """The Markdown table of docs/configuration.md: every variable, its default and what it does."""
    rows = ["| variable | default | what it does |", "| --- | --- | --- |"]
    for f in fields(Settings):
        default = f.metadata.get("shown") or ("unset" if f.default is None else f"`{f.default}`")
        rows.append(f"| `{f.metadata['env']}` | {default} | {f.metadata['doc']} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(configuration_table(), end="")
