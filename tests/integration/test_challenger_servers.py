"""The shadow challenger through real gunicorn (2 workers, metrics summed from their files): the answers are those
of the service without it, and /metrics counts every customer both models scored, with their PSI."""

import numpy as np
import pytest
import requests

from churn import metrics
from churn.model.scoring import load_served_model
from churn.monitor.drift import psi
from churn.serve.app import create_app
from devtools import MODEL_FILE, free_port, gunicorn_command, running_server
from tests.helpers import customers, samples, without_ids

BATCHES = [customers(100, start) for start in range(0, 1000, 100)]


@pytest.fixture(scope="module")
def gunicorn_with_challenger(other_model, tmp_path_factory):
    metrics_dir = tmp_path_factory.mktemp("metrics")
    port = free_port()
    env = {"CHURN_CHALLENGER_MODEL_FILE": str(other_model), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with running_server(gunicorn_command(port), port, env=env) as (url, _):
        yield url


def test_answers_unchanged_and_every_customer_counted_across_workers(gunicorn_with_challenger, other_model):
    url = gunicorn_with_challenger
    without = create_app(load_served_model(MODEL_FILE)).test_client()
    for batch in BATCHES:
        answer = requests.post(f"{url}/predict", json=batch, timeout=10)
        assert answer.status_code == 200
        assert without_ids(answer.content) == without_ids(without.post("/predict", json=batch).data)
    exposed = samples(requests.get(f"{url}/metrics", timeout=10).text)
    counts = {
        model: np.array(
            [
                exposed[("churn_challenger_customers_total", (("bin", b), ("model", model)))]
                for b in metrics.PROBABILITY_BINS
            ]
        )
        for model in metrics.SHADOW_MODELS
    }
    sent = sum(len(batch) for batch in BATCHES)
    assert counts["champion"].sum() == counts["challenger"].sum() == sent
    agreement = [exposed[("churn_challenger_agreement_customers_total", (("agree", a),))] for a in ("true", "false")]
    assert sum(agreement) == sent
    assert exposed[("churn_challenger_psi", ())] == pytest.approx(psi(counts["champion"], counts["challenger"]))
    challenger = load_served_model(other_model)
    labels = (("model_file", other_model.name), ("role", "challenger"), ("version", challenger.version))
    assert exposed[("churn_model_info", labels)] == 1
