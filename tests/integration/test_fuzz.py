"""schemathesis against the real gunicorn: every operation of its /openapi.json, positive and negative cases.

Each case must pass every built-in check: no 5xx, a documented status, content type and headers, and a body
that matches the documented schema. `make fuzz` runs the same test longer (FUZZ_EXAMPLES).

schemathesis' lazy loader (`schemathesis.pytest.from_fixture`) fails under pytest 9 (it sets
`request.node._nodeid`, which pytest 9 no longer has), and the server's port is known only once it runs; so
the schema is built at import from the same function the service serves it with, and the first test checks
that the running service serves exactly that document.
"""

import os
from datetime import timedelta

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from churn.model.data import clean_text
from churn.model.schema import FEATURES, ID_COLUMN, ID_NAME, feature_for
from churn.model.scoring import load_served_model
from churn.serve.app import create_app
from churn.serve.openapi import openapi_document
from churn.settings import Settings
from devtools import MODEL_FILE, free_port, gunicorn_command, running_server

MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
# Small, so that generated batches near the limit stay cheap to send and to score.
MAX_CUSTOMERS = 20
SETTINGS = Settings(max_customers=MAX_CUSTOMERS)
DOCUMENT = openapi_document(create_app(load_served_model(MODEL_FILE), SETTINGS), SETTINGS)

# 413 is this API's answer to a batch longer than maxItems, as the document says; the other statuses are
# the ones it documents for a request it rejects.
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": [400, 404, 405, 413, 415, 422]}}}
)
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)
MODEL_NAMES = {f.name for f in FEATURES} | {ID_COLUMN}


@schema.hook
def filter_body(ctx, body) -> bool:
    """Leave out bodies with another spelling of a field's name (schemathesis tries case variants of names).

    JSON Schema cannot say that two spellings of one field must agree, so the document names each field in the
    model's spelling and describes the others in words; tests/unit/test_endpoint.py covers every spelling and conflict.
    """
    customers = body if isinstance(body, list) else [body]
    return not any(
        key not in MODEL_NAMES and (feature_for(key) or clean_text(key) == ID_NAME)
        for customer in customers
        if isinstance(customer, dict)
        for key in customer
    )


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("fuzz") / "gunicorn.log"
    env = {"CHURN_MAX_CUSTOMERS": str(MAX_CUSTOMERS)}
    with running_server(gunicorn_command(port), port, env=env, log_path=log) as (url, process):
        yield url, process, log


def test_the_fuzzed_document_is_the_one_served(fuzz_server):
    url, _, _ = fuzz_server
    assert requests.get(f"{url}/openapi.json", timeout=10).json() == DOCUMENT


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    # Per example, generous: the machine is shared, and only a hanging request should fail here.
    deadline=timedelta(seconds=5),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_every_operation_keeps_its_contract(case, fuzz_server):
    url, process, _ = fuzz_server
    case.call_and_validate(base_url=url, timeout=10)
    assert process.poll() is None, "gunicorn exited during the fuzzing"


def test_no_worker_died_or_logged_an_error(fuzz_server):
    """Runs after the fuzzing (file order): a worker killed mid-request shows only in the server's log."""
    _, process, log = fuzz_server
    text = log.read_text()
    assert process.poll() is None
    for sign in ("Traceback", "WORKER TIMEOUT", "was sent SIGKILL", "unhandled error", '"level": "error"'):
        assert sign not in text, f"{sign!r} in the server log:\n{text[-3000:]}"
