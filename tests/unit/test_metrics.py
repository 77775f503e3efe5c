"""Prometheus metrics: a batch counted at once and worker slots, each in a fresh interpreter."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from churn import metrics
from devtools import ROOT
from tests.helpers import PROBABILITY_SERIES, samples

# observe_scores, in a fresh interpreter: the metrics are globals of the default registry.
OBSERVE_BOTH_WAYS = """
import json, sys
from churn import metrics

def counts():
    served = {s.labels["bin"]: s.value for s in metrics.PROBABILITY.collect()[0].samples if s.name.endswith("_total")}
    return [served.get(name, 0) for name in metrics.PROBABILITY_BINS]

values = json.loads(sys.stdin.read())
metrics.observe_scores(values)
batched = counts()
for value in values:
    metrics.observe_scores([value])
print(json.dumps([batched, [b - a for a, b in zip(batched, counts())]]))
"""


def probability_values() -> list[float]:
    edges = [i / 10 for i in range(11)]
    near = [float(np.nextafter(e, d)) for e in edges for d in (-1.0, 2.0) if 0 <= np.nextafter(e, d) <= 1]
    return edges + near + np.random.default_rng(0).random(2000).tolist()


def run_python(code: str, env: dict, stdin: str = "") -> str:
    run = subprocess.run(
        [sys.executable, "-c", code], input=stdin, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.mark.parametrize("multiprocess", [False, True], ids=["one-process", "multiprocess"])
def test_a_batch_counts_what_one_customer_at_a_time_counts(tmp_path, multiprocess):
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if multiprocess:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    values = probability_values()
    batched, one_by_one = json.loads(run_python(OBSERVE_BOTH_WAYS, env, json.dumps(values)))
    assert batched == one_by_one
    assert sum(batched) == len(values)
    assert batched[0] == sum(v < 0.1 for v in values) > 0
    assert batched[9] == sum(v >= 0.9 for v in values) > 0


# A worker that replaces a recycled one takes its slot and carries on from the slot's values: prometheus_client reads
# a value's file when it opens it. Should a release stop doing so, totals would fall at every recycle: this fails.
TAKE_SLOT = """
import types
from churn import metrics
metrics.take_slot(types.SimpleNamespace(metrics_slot=3))
metrics.observe_scores([0.05, 0.95, 0.95])
print(metrics.exposition({})[0].decode())
"""


def test_a_new_process_in_a_slot_carries_on_from_its_values(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    run_python(TAKE_SLOT, env)
    exposition = samples(run_python(TAKE_SLOT, env))
    assert exposition[("churn_predictions_total", ())] == 6
    assert exposition[(PROBABILITY_SERIES, (("bin", "0.9-1.0"),))] == 4
    assert {path.name for path in tmp_path.glob("*worker3.db")} == {f"{kind}_worker3.db" for kind in metrics.FILE_KINDS}


def test_slots_are_the_lowest_no_running_worker_holds():
    running = [types.SimpleNamespace(metrics_slot=slot) for slot in (0, 2)]
    new = types.SimpleNamespace()
    metrics.choose_slot(new, running)
    assert new.metrics_slot == 1
    metrics.choose_slot(new, [*running, types.SimpleNamespace(metrics_slot=1)])
    assert new.metrics_slot == 3
