"""The benchmark's apps answer correctly: the course's classic service, Flask's floor, and both under gunicorn
as `make bench` starts them. No timing here: speed is measured by bench/run.py, not asserted."""

import json
import pickle

import pytest

from bench import classic, floor, run
from churn.model.schema import SAMPLE_CUSTOMER
from churn.model.training import FEATURE_NAMES
from churn.settings import GUNICORN_WORKER_CLASSES, Settings
from devtools import MODEL_FILE
from tests.helpers import without_ids


@pytest.fixture(scope="module")
def customers(clean_df):
    """200 dataset rows in the model's spelling, the one the classic service understands."""
    return json.loads(clean_df[FEATURE_NAMES].head(200).to_json(orient="records"))


def post(app_or_client, body):
    client = app_or_client.test_client() if hasattr(app_or_client, "test_client") else app_or_client
    return client.post("/predict", data=json.dumps(body), content_type="application/json")


def test_classic_answers_as_scikit_learn_does():
    with open(MODEL_FILE, "rb") as f_in:
        dv, model = pickle.load(f_in)
    expected = model.predict_proba(dv.transform([SAMPLE_CUSTOMER]))[0, 1]
    response = post(classic.app, SAMPLE_CUSTOMER)
    assert response.status_code == 200
    assert response.get_json() == {"churn_probability": float(expected), "churn": bool(expected >= 0.5)}


def test_classic_and_our_service_agree_on_each_customer(client, customers):
    classic_client = classic.app.test_client()
    ours_batch = post(client, customers).get_json()
    for customer, in_batch in zip(customers, ours_batch, strict=True):
        theirs = post(classic_client, customer).get_json()
        ours = post(client, customer).get_json()
        assert abs(ours["churn_probability"] - theirs["churn_probability"]) <= 1e-12
        assert abs(in_batch["churn_probability"] - theirs["churn_probability"]) <= 1e-12
        assert ours["churn"] == theirs["churn"] == in_batch["churn"]


def test_floor_parses_the_body_and_answers_a_constant(customers):
    for body in (SAMPLE_CUSTOMER, customers):
        response = post(floor.app, body)
        assert response.status_code == 200
        assert response.get_json() == {"churn_probability": 0.5, "churn": False}
    # It does parse: a body that is not JSON is refused.
    bad = floor.app.test_client().post("/predict", data="{", content_type="application/json")
    assert bad.status_code == 400


def test_every_app_on_both_paths_as_the_benchmark_starts_them(tmp_path):
    single = json.dumps(SAMPLE_CUSTOMER).encode()
    batch = run.batch_body()
    servers = {}
    try:
        for name in run.SERVICES:
            servers[name] = run.start_server(name, 2, run.server_env(), tmp_path, single)
        # Raises BenchError unless ours and the classic agree within 1e-12 and our batch has 1,000 answers.
        run.check_answers(servers, single, batch, json.dumps(run.raw_rows(run.BATCH_SIZE)).encode())
        for floor_app in ("floor", "bare"):
            status, answer = run.post(servers[floor_app].url, single)
            assert (status, answer) == (200, {"churn_probability": 0.5, "churn": False})
        default = Settings.from_env().worker_class
        for name, server in servers.items():
            # Each on the worker model named (the classic service's sync), and behind nginx if so named.
            worker_class = GUNICORN_WORKER_CLASSES[run.SERVICES[name].worker_class or default]
            assert f"Using worker: {worker_class}" in server.log_path.read_text()
            assert (server.proxy is not None) == run.SERVICES[name].behind_nginx
        for name in run.PROXIED:
            access_log = servers[name].proxy.directory / "logs" / "access.log"
            assert '"POST /predict HTTP/1.1" 200' in access_log.read_text()
        for server in servers.values():
            rss, pss = run.worker_memory(server.process.pid)
            assert 0 < pss <= rss
            assert run.server_cpu(server.process.pid) > 0
    finally:
        for server in servers.values():
            server.stop()
    assert all(server.process.returncode is not None for server in servers.values())
    assert all(server.proxy.process.returncode is not None for server in servers.values() if server.proxy)


WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:40000/predict
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52ms  812.00us  30.01ms   90.00%
    Req/Sec     2.70k   150.00     3.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    1.60ms
     90%    2.40ms
     99%    2.01s
  53712 requests in 10.00s, 9.43MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 3
Requests/sec:   5371.20
Transfer/sec:    965.49KB
"""


def test_wrk_output_is_read():
    result = run.parse_wrk(WRK_OUTPUT)
    assert result.rps == 5371.20
    assert result.p50 == pytest.approx(812e-6)
    assert result.p99 == pytest.approx(2.01)
    assert result.requests == 53712
    assert result.bad == 6  # socket errors and non-2xx answers


def test_wrk_output_without_figures_is_an_error():
    with pytest.raises(run.BenchError):
        run.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_the_undrifted_app_answers_alike_without_drift_counts(client):
    from bench import undrifted
    from churn.serve.routes import PREDICTOR

    endpoints = undrifted.app.extensions[PREDICTOR].endpoints.values()
    assert [endpoint.drift for endpoint in endpoints] == [None, None]
    assert without_ids(post(undrifted.app, SAMPLE_CUSTOMER).get_json()) == without_ids(
        post(client, SAMPLE_CUSTOMER).get_json()
    )


def test_the_in_process_costs_are_measured_on_real_stores():
    from bench import inprocess

    costs = dict(inprocess.measure(repeat=1))
    server = "the PostgreSQL server's own"  # from its processes' CPU times, counted in 10 ms ticks: can read 0
    assert len(costs) == 9 and costs[server] >= 0
    assert all(ms > 0 for what, ms in costs.items() if what != server), costs
    assert "| drift counts |" in inprocess.table(list(costs.items()))
    whole, unobserved = (us for _, us in inprocess.one_customer(repeat=1))
    assert whole > 0 and unobserved > 0
    layers = dict(inprocess.http_layers(repeat=1))
    assert len(layers) == 5 and all(us > 0 for us in layers.values()), layers


def test_the_logs_timed_writes_and_unpacks_reach_the_store(tmp_path):
    from bench import inprocess
    from churn.monitor import packed
    from churn.monitor.store import Store
    from churn.serve.routes import PREDICTOR
    from predict import app

    answer = inprocess.answer_of(app.extensions[PREDICTOR].endpoints["predict"], run.batch_body())
    queued, customers = [packed.queued("predict", answer)], len(answer.prediction_ids)
    store = Store(f"sqlite:///{tmp_path}/log.db")
    try:
        inprocess.writing(store, queued, repeat=1)  # two calls to warm, one timed: three packs
        assert store.query("SELECT COUNT(*) FROM packed_predictions") == [(3,)]
        inprocess.unpacking(store, queued, repeat=4)  # those three first, untimed, then four more
        assert store.query("SELECT COUNT(*) FROM packed_predictions") == [(0,)]
        assert store.query("SELECT COUNT(DISTINCT prediction_id) FROM predictions") == [(7 * customers,)]
    finally:
        store.close()
