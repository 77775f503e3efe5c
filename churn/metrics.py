"""Prometheus metrics behind a façade, on prometheus_client's public API, correct across gunicorn workers.

The rest of the service calls observe_request(), observe_scores(), observe_challenger(), drift_series(),
count_refused() and exposition(), and gunicorn.conf.py the worker hooks: which library keeps the numbers is this
module's business alone.

prometheus_client decides at import whether values live in per-process files: gunicorn.conf.py sets
PROMETHEUS_MULTIPROC_DIR before the app is imported, and /metrics then sums every worker's files. Without it
(waitress, the dev server: one process) the default registry is exposed.

Each worker writes its files under a slot number rather than its pid (prometheus_client's documented
process_identifier hook, the one uWSGI setups use for worker ids): a worker that replaces a recycled or killed one
takes a free slot and carries on from that slot's values, since prometheus_client reads a file's values when it
opens it. So totals survive any number of recycled workers, and the folder, and the time /metrics takes to read
it, stays bounded by the most workers that ever run at once.
"""

import bisect
import itertools
import logging
import os
from collections.abc import Callable

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from churn.model.schema import FEATURES, OTHER
from churn.monitor.drift import SCORE, psi
from churn.settings import Settings

log = logging.getLogger(__name__)
_metrics_dir = Settings.one_from_env("metrics_dir")
# Until a worker takes a slot, a process writes under its pid, as prometheus_client does by default. The identifier
# is remembered rather than asked of the system on every update (a system call per metric update).
_identity = str(os.getpid())
# The kinds of file prometheus_client writes for the metrics below (one per type; a test checks).
FILE_KINDS = ("counter", "histogram")
# prometheus_client writes values into files it maps to memory: a page it writes that the filesystem cannot back (a
# full disk) kills the process with SIGBUS. So each process's files get their blocks before any value is written,
# enough for every series here several times over; where they cannot, the process counts nothing (degraded) rather
# than die, and answers as ever.
RESERVED_BYTES = 256 * 1024
_degraded = False


def _forked() -> None:
    global _identity
    _identity = str(os.getpid())


def _reserve(identity: str) -> bool:
    """Whether the files of this identity now have their blocks (fallocate), or already had them."""
    try:
        for kind in FILE_KINDS:
            fd = os.open(os.path.join(_metrics_dir, f"{kind}_{identity}.db"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, RESERVED_BYTES)
            finally:
                os.close(fd)
    except OSError as e:
        log.error("metrics degraded: no room for this process's metrics in %s (%s)", _metrics_dir, e.strerror)
        return False
    return True


os.register_at_fork(after_in_child=_forked)
if _metrics_dir is not None:
    if _reserve(_identity):
        values.ValueClass = values.MultiProcessValue(process_identifier=lambda: _identity)
    else:  # values in memory, never written (prometheus_client chose files when it saw the folder's variable)
        values.ValueClass = values.MutexValue
        _degraded = True

REQUESTS = Counter("churn_http_requests", "HTTP requests answered", ["method", "endpoint", "status"])
REQUEST_DURATION = Histogram("churn_http_request_duration_seconds", "Time to answer a request", ["endpoint"])
PREDICTIONS = Counter("churn_predictions", "Customers scored")
LOG_LINES_DROPPED = Counter("churn_log_lines_dropped", "Access lines that could not be written (a full disk)")
PREDICTION_LOG_WRITTEN = Counter("churn_prediction_log_written", "Customers written to the prediction log")
PREDICTION_LOG_DROPPED = Counter(
    "churn_prediction_log_dropped", "Customers not logged: the queue was full while the log's store was slow or down"
)
# Counts per bin, not a Histogram: a batch adds each bin's count in one increment (public API), where a Histogram
# would take one observe per customer.
PROBABILITY_EDGES = [tenth / 10 for tenth in range(11)]
PROBABILITY_BINS = [f"{low:.1f}-{high:.1f}" for low, high in itertools.pairwise(PROBABILITY_EDGES)]
PROBABILITY = Counter(
    "churn_probability_customers",
    "Customers served by churn probability, in tenths (the last bin holds 1.0); watch the shares drift",
    ["bin"],
)
_probability_bins = [PROBABILITY.labels(name) for name in PROBABILITY_BINS]
# The shadow challenger (churn.monitor.challenger): both models' scores of the customers it scored, in the same
# tenths, so that the PSI between them (churn_challenger_psi) compares the same customers.
CHALLENGER = Counter(
    "churn_challenger_customers",
    "Customers the challenger scored in the shadow, by the tenth each model's probability falls in",
    ["model", "bin"],
)
SHADOW_MODELS = ("champion", "challenger")
_challenger_bins = {model: [CHALLENGER.labels(model, name) for name in PROBABILITY_BINS] for model in SHADOW_MODELS}
AGREEMENT = Counter(
    "churn_challenger_agreement_customers",
    "Customers the challenger scored, by whether its churn (at CHURN_THRESHOLD) agrees with the served model's",
    ["agree"],
)
_agreed, _disagreed = AGREEMENT.labels("true"), AGREEMENT.labels("false")

# Drift (docs/monitoring.md): customers answered per bin of each feature and of the probability, the bins of the
# model's reference profile (churn.monitor.drift); label values come from the schema, never from a client.
FEATURE_CUSTOMERS = Counter(
    "churn_feature_customers",
    "Customers answered, by feature and by its category or its bin at the training split's deciles",
    ["feature", "bin"],
)
SCORE_CUSTOMERS = Counter(
    "churn_score_customers", "Customers answered, by bin of churn probability at the training split's deciles", ["bin"]
)
REFUSED_VALUES = Counter(
    "churn_refused_values", "Values refused, by the feature they were sent for ('other': anything else)", ["field"]
)
_refused_fields = {name: REFUSED_VALUES.labels(name) for name in [*(f.name for f in FEATURES), OTHER]}

_reference_shares: list[tuple[tuple[str, str], float]] = []  # ((feature, bin), training share), for the gauges
_request_series = {}  # (method, endpoint, status) -> its metric children, looked up once


def observe_request(method: str, endpoint: str, status: str, duration: float) -> None:
    if _degraded:
        return
    key = (method, endpoint, status)
    series = _request_series.get(key)
    if series is None:
        series = _request_series[key] = (REQUESTS.labels(*key), REQUEST_DURATION.labels(endpoint))
    series[0].inc()
    series[1].observe(duration)


def observe_scores(probabilities: list[float]) -> None:
    """Count the customers scored, one increment per bin for a whole batch."""
    if _degraded:
        return
    PREDICTIONS.inc(len(probabilities))
    _count_in_tenths(_probability_bins, probabilities)


def observe_challenger(champion: list[float], challenger: list[float], agreed: int) -> None:
    """The champion's and the challenger's probabilities of the same customers, agreed of which agree on churn."""
    if _degraded:
        return
    _count_in_tenths(_challenger_bins["champion"], champion)
    _count_in_tenths(_challenger_bins["challenger"], challenger)
    if agreed:
        _agreed.inc(agreed)
    if agreed < len(champion):
        _disagreed.inc(len(champion) - agreed)


def _count_in_tenths(children: list, probabilities: list[float]) -> None:
    last = len(children) - 1
    if len(probabilities) == 1:
        children[min(bisect.bisect_right(PROBABILITY_EDGES, probabilities[0]) - 1, last)].inc()
        return
    bins = np.minimum(np.searchsorted(PROBABILITY_EDGES, probabilities, side="right") - 1, last)
    for child, count in zip(children, np.bincount(bins, minlength=last + 1).tolist(), strict=True):
        if count:
            child.inc(count)


def drift_series(keys: list[tuple[str, str]], shares: list[float]) -> Callable[[list[int]], None]:
    """The drift counters of keys ((feature or SCORE, bin) each), created at 0 so that rates and PSI work from
    the first scrape, and their reference shares published as gauges: add(counts) adds counts[i] to series i."""
    global _reference_shares
    series = [SCORE_CUSTOMERS.labels(b) if f == SCORE else FEATURE_CUSTOMERS.labels(f, b) for f, b in keys]
    _reference_shares = list(zip(keys, shares, strict=True))

    def add(counts: list[int]) -> None:
        if _degraded:
            return
        for child, count in zip(series, counts, strict=True):
            if count:
                child.inc(count)

    return add


def count_refused(fields: dict[str, int]) -> None:
    """Values refused in a request, by feature name; any other key is counted as OTHER."""
    if _degraded:
        return
    for field, count in fields.items():
        _refused_fields.get(field, _refused_fields[OTHER]).inc(count)


def count_dropped_lines(lines: int) -> None:
    if not _degraded:
        LOG_LINES_DROPPED.inc(lines)


def count_logged(customers: int) -> None:
    if not _degraded:
        PREDICTION_LOG_WRITTEN.inc(customers)


def count_log_dropped(customers: int) -> None:
    if not _degraded:
        PREDICTION_LOG_DROPPED.inc(customers)


def degraded() -> bool:
    """Whether some counts are being lost: this process could not reserve its files, or the folder's filesystem is
    full or read-only now (so a worker starting now could not)."""
    if _degraded:
        return True
    if _metrics_dir is None:
        return False
    try:
        folder = os.statvfs(_metrics_dir)
    except OSError:
        return True
    return folder.f_bavail == 0 or bool(folder.f_flag & os.ST_RDONLY)


class DegradedCollector:
    """churn_metrics_degraded: 1 while counts are being lost (alert on it), else 0."""

    def collect(self):
        yield GaugeMetricFamily("churn_metrics_degraded", degraded.__doc__.split(":")[0], value=float(degraded()))


class ModelInfoCollector:
    """churn_model_info{role, version, model_file} 1: one series per loaded model, as the process answering /metrics
    serves them (during a reload, old and new workers answer in turn). Joined to other series on nothing, e.g.
    `churn_predictions_total * on() group_left(version) churn_model_info{role="champion"}`.

    models: ServedModels by role (champion, and challenger when there is one)."""

    def __init__(self, models: dict):
        self.models = models

    def collect(self):
        info = GaugeMetricFamily(
            "churn_model_info", "The models served: 1 each", labels=["role", "version", "model_file"]
        )
        for role, model in self.models.items():
            if model is not None:
                info.add_metric([role, model.version, model.path.name], 1.0)
        yield info


class ReferenceCollector:
    """churn_feature_reference_share and churn_score_reference_share: the training shares of the drift bins,
    constants of the model every process loaded at start, so read from memory rather than from a gauge's files."""

    def collect(self):
        if not _reference_shares:
            return
        features = GaugeMetricFamily(
            "churn_feature_reference_share",
            "Share of the training split in each bin of a feature",
            labels=["feature", "bin"],
        )
        score = GaugeMetricFamily(
            "churn_score_reference_share",
            "Share of the training split in each bin of churn probability",
            labels=["bin"],
        )
        for (feature, bin_), share in _reference_shares:
            if feature == SCORE:
                score.add_metric([bin_], share)
            else:
                features.add_metric([feature, bin_], share)
        yield features
        yield score


class ChallengerPsiCollector:
    """Every family of source, and churn_challenger_psi: the PSI (churn.monitor.drift) of the challenger's tenths
    against the champion's over every customer counted since the service started (for a window, docs/models.md
    has the PromQL). source gives churn_challenger_customers summed over the workers, so its files are read once."""

    def __init__(self, source):
        self.source = source

    def collect(self):
        counts = {model: np.zeros(len(PROBABILITY_BINS)) for model in SHADOW_MODELS}
        for family in self.source.collect():
            yield family
            if family.name == "churn_challenger_customers":
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        counts[sample.labels["model"]][PROBABILITY_BINS.index(sample.labels["bin"])] += sample.value
        if counts["champion"].sum() and counts["challenger"].sum():
            doc = "PSI of the challenger's scores against the champion's, since the start"
            yield GaugeMetricFamily("churn_challenger_psi", doc, value=psi(counts["champion"], counts["challenger"]))


def exposition(models: dict) -> tuple[bytes, str]:
    """The text exposition: what this process counted (one process) or every worker's files (gunicorn), and the
    models (ServedModels by role) this process serves."""
    counted = REGISTRY if _metrics_dir is None else MultiProcessCollector(None)
    registry = CollectorRegistry()
    collectors = ChallengerPsiCollector(counted), DegradedCollector(), ReferenceCollector(), ModelInfoCollector(models)
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


# ---- gunicorn's hooks (gunicorn.conf.py) ----


def clear_folder(folder: str) -> None:
    """At the master's start: files left by an earlier run would be counted again."""
    try:
        for name in os.listdir(folder):
            os.remove(os.path.join(folder, name))
    except OSError as e:  # a read-only folder: counted again, but the service starts
        log.error("metrics: cannot clear %s (%s)", folder, e.strerror)


def choose_slot(worker, workers) -> None:
    """pre_fork, in the master: the lowest slot no running worker holds."""
    taken = {getattr(other, "metrics_slot", None) for other in workers}
    worker.metrics_slot = next(slot for slot in range(len(taken) + 1) if slot not in taken)


def take_slot(worker) -> None:
    """post_fork, in the new worker: write under the slot chosen for it, once its files have their blocks."""
    global _identity, _degraded
    identity = f"worker{worker.metrics_slot}"
    if _degraded or _metrics_dir is None or _reserve(identity):
        _identity = identity
    else:
        _degraded = True
