"""Operability: probes, model card, OpenAPI and Swagger UI, request IDs, JSON logs and limits.

Most tests run against real gunicorn (2 workers) and real waitress started with the limits set by environment.
"""

import hashlib
import json
import logging
import re
import select
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import jsonschema
import numpy as np
import pytest
import requests
import sklearn
from openapi_spec_validator import validate

from churn import logs
from churn.data import file_sha256
from churn.model import load_model, save_model
from churn.openapi import REQUEST_ID_PATTERN
from churn.schema import CUSTOMER, FEATURES, SAMPLE_CUSTOMER
from churn.scoring import load_served_model
from churn.service import REQUEST_ID, Settings, create_app
from tests.conftest import MODEL_FILE, ROOT
from tests.servers import BIN, free_port, gunicorn_command, running_server, waitress_command
from tests.test_metrics import customers

LIMITS = {"CHURN_MAX_CUSTOMERS": "5", "CHURN_MAX_BODY_BYTES": "4096", "CHURN_THRESHOLD": "0.3"}
ACCESS_FIELDS = {"time", "level", "logger", "message", "request_id", "method", "path", "status", "duration_ms"}
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class Server:
    kind: str
    url: str
    stdout: Path

    def log_lines(self) -> list[dict]:
        """Every line the server wrote to stdout, each of which must be a JSON object."""
        entries = []
        for line in self.stdout.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                pytest.fail(f"{self.kind} wrote a line that is not JSON: {line!r}")
            assert isinstance(entries[-1], dict)
        return entries

    def access_lines(self, request_ids: list[str]) -> dict[str, list[dict]]:
        """The access lines of these requests, by request ID (waiting a little for the last ones)."""
        deadline = time.monotonic() + 5
        while True:
            found = {rid: [] for rid in request_ids}
            for entry in self.log_lines():
                if entry.get("logger") == "churn.access" and entry.get("request_id") in found:
                    found[entry["request_id"]].append(entry)
            if all(found.values()) or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


@pytest.fixture(scope="module", params=["gunicorn", "waitress"])
def server(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    port = free_port()
    if request.param == "gunicorn":
        (tmp / "metrics").mkdir()
        # gunicorn's own (plain text) log goes to a file, so stdout holds only what the app writes.
        command = [*gunicorn_command(port), "--error-logfile", str(tmp / "gunicorn.log")]
        env = {**LIMITS, "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics")}
    else:
        # One process: no multiprocess directory, even if this test process has one.
        command = ["env", "-u", "PROMETHEUS_MULTIPROC_DIR", *waitress_command(port)]
        env = LIMITS
    with running_server(command, port, env=env, log_path=tmp / "stdout.log") as (url, _):
        yield Server(request.param, url, tmp / "stdout.log")


def padded(body: dict | list, size: int) -> bytes:
    """The body as JSON, padded with whitespace to exactly size bytes."""
    data = json.dumps(body).encode()
    assert len(data) <= size
    return data + b" " * (size - len(data))


def chunked(data: bytes):
    """A generator body: requests sends it chunked, without Content-Length."""
    for i in range(0, len(data), 1000):
        yield data[i : i + 1000]


# ---- Probes and the model card


def test_probes(server):
    ping = requests.get(f"{server.url}/ping", timeout=5)
    assert (ping.status_code, ping.text) == (200, "PONG")
    assert ping.headers["Content-Type"].startswith("text/plain")
    for path, status in (("/health/live", "alive"), ("/health/ready", "ready")):
        response = requests.get(f"{server.url}{path}", timeout=5)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json"
        assert response.json() == {"status": status}


def nan_model(tmp_path: Path) -> Path:
    """A real model file whose scorer answers NaN: the warm-up must fail."""
    dv, model = load_model(MODEL_FILE)
    model.intercept_ = np.array([np.nan])
    path = tmp_path / "model_nan.bin"
    save_model(path, dv, model)
    return path


def test_not_ready_when_the_warm_up_prediction_fails(tmp_path):
    client = create_app(load_served_model(nan_model(tmp_path))).test_client()
    assert client.get("/health/live").status_code == 200
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert "warm-up" in ready.get_json()["error"]
    # A model that cannot score must not answer predictions (it would send NaN, which is not JSON).
    for body in (SAMPLE_CUSTOMER, [SAMPLE_CUSTOMER]):
        response = client.post("/predict", json=body)
        assert response.status_code == 503
        assert "warm-up" in response.get_json()["error"]


def test_model_card(client, dataset_path):
    card = client.get("/model").get_json()
    assert card["model_file"] == MODEL_FILE.name
    assert card["sha256"] == hashlib.sha256(MODEL_FILE.read_bytes()).hexdigest()
    assert card["threshold"] == 0.5
    training = json.loads(MODEL_FILE.with_name(MODEL_FILE.name + ".json").read_text())
    assert card["training"] == training
    # load_model refuses a pickle of another scikit-learn, and train.py recorded the one it pickled with.
    assert card["sklearn_version"] == sklearn.__version__ == training["versions"]["scikit-learn"]
    assert training["data_sha256"] == file_sha256(dataset_path)
    assert len(training["cv_auc"]) == training["params"]["n_splits"]
    assert 0.8 < training["cv_auc_mean"] < 0.9 and 0.8 < training["test_auc"] < 0.9
    assert list(card["features"]) == [f.name for f in FEATURES]
    for feature in FEATURES:
        described = card["features"][feature.name]
        assert described["type"] == ("string" if feature.values else "integer" if feature.integer else "number")
        if feature.values:
            assert described["allowed"] == list(feature.accepted_values)
        else:
            assert (described["minimum"], described["maximum"]) == (feature.minimum, feature.maximum)


def test_model_card_without_training_metrics(tmp_path):
    path = tmp_path / "model_C=1.0.bin"
    shutil.copy(MODEL_FILE, path)
    card = create_app(load_served_model(path)).test_client().get("/model").get_json()
    assert card["training"] is None
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_threshold_comes_from_the_environment(server, served_model):
    assert requests.get(f"{server.url}/model", timeout=5).json()["threshold"] == 0.3
    # A customer between 0.3 and 0.5 churns only under this server's threshold.
    customer = next(
        c for c in customers(100) if 0.3 <= served_model.scorer.score_one(CUSTOMER.validate_python(c)) < 0.5
    )
    assert requests.post(f"{server.url}/predict", json=customer, timeout=5).json()["churn"] is True


# ---- Limits


def test_too_many_customers_is_413(server):
    assert requests.post(f"{server.url}/predict", json=customers(5), timeout=5).status_code == 200
    response = requests.post(f"{server.url}/predict", json=customers(6), timeout=5)
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "application/json"
    assert "at most 5" in response.json()["error"]


@pytest.mark.parametrize("send", [bytes, chunked], ids=["content-length", "chunked"])
def test_body_size_limit_is_413(server, send):
    url, headers = f"{server.url}/predict", {"Content-Type": "application/json"}
    assert requests.post(url, data=send(padded(SAMPLE_CUSTOMER, 4096)), headers=headers, timeout=5).status_code == 200
    for size in (4097, 1_000_000):
        response = requests.post(url, data=send(padded(SAMPLE_CUSTOMER, size)), headers=headers, timeout=10)
        assert response.status_code == 413, response.text
        assert response.json()["error"] == "The body is larger than 4096 bytes"


def gunicorn_settings(tmp_path: Path, env: dict) -> dict[str, str]:
    # A multiprocess directory of our own, or gunicorn.conf.py would make one that only on_exit removes.
    env = {"PATH": str(BIN), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), **env}
    run = subprocess.run(
        [str(BIN / "gunicorn"), "--print-config", "predict:app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return dict(re.findall(r"^(\w+) += (.*)$", run.stdout, re.MULTILINE))


def test_gunicorn_reads_its_timeouts_from_the_environment(tmp_path):
    defaults = gunicorn_settings(tmp_path, {})
    assert (defaults["timeout"], defaults["graceful_timeout"]) == ("30", "8")
    # Instances would share ~/.gunicorn/gunicorn.ctl, and log an error without a writable home.
    assert defaults["control_socket_disable"] == "True"
    configured = gunicorn_settings(tmp_path, {"GUNICORN_TIMEOUT": "11", "GUNICORN_GRACEFUL_TIMEOUT": "3"})
    assert (configured["timeout"], configured["graceful_timeout"]) == ("11", "3")


# ---- Request IDs and the JSON log lines

REQUESTS = [
    # method, path, request options, status, customers
    ("GET", "/ping", {}, 200, 0),
    ("GET", "/health/live", {}, 200, 0),
    ("GET", "/health/ready", {}, 200, 0),
    ("GET", "/model", {}, 200, 0),
    ("GET", "/metrics", {}, 200, 0),
    ("GET", "/openapi.json", {}, 200, 0),
    ("GET", "/docs", {"allow_redirects": False}, 308, 0),
    ("GET", "/docs/", {}, 200, 0),
    ("GET", "/docs/swagger-ui.css", {}, 200, 0),
    ("POST", "/predict", {"json": SAMPLE_CUSTOMER}, 200, 1),
    ("POST", "/predict", {"json": customers(3)}, 200, 3),
    ("POST", "/predict", {"data": b"{", "headers": {"Content-Type": "application/json"}}, 400, 0),
    ("POST", "/predict", {"json": customers(6)}, 413, 0),
    ("POST", "/predict", {"data": json.dumps(SAMPLE_CUSTOMER)}, 415, 0),
    ("POST", "/predict", {"json": dict(SAMPLE_CUSTOMER, tenure=-1)}, 422, 0),
    ("GET", "/nowhere", {}, 404, 0),
    ("GET", "/predict", {}, 405, 0),
]


def call(server: Server, method: str, path: str, options: dict, request_id: str | None) -> requests.Response:
    options = dict(options, headers=dict(options.get("headers", {})))
    if request_id is not None:
        options["headers"]["X-Request-ID"] = request_id
    return requests.request(method, f"{server.url}{path}", timeout=10, **options)


def test_every_response_has_a_request_id_and_one_json_log_line(server):
    answered = []  # (request ID, method, path, status, customers)
    for n, (method, path, options, status, count) in enumerate(REQUESTS):
        sent = f"op-{server.kind}-{n}.{time.time_ns()}"
        for request_id in (sent, None):
            response = call(server, method, path, options, request_id)
            assert response.status_code == status, (path, response.text)
            returned = response.headers["X-Request-ID"]
            assert returned == sent if request_id else GENERATED_ID.fullmatch(returned), (path, returned)
            answered.append((returned, method, path, status, count))
    assert len({a[0] for a in answered}) == len(answered), "generated request IDs repeat"

    lines = server.access_lines([a[0] for a in answered])
    now = datetime.now(UTC)
    for request_id, method, path, status, count in answered:
        assert len(lines[request_id]) == 1, f"{method} {path}: {lines[request_id]}"
        entry = lines[request_id][0]
        assert ACCESS_FIELDS <= entry.keys()
        assert (entry["method"], entry["path"], entry["status"], entry["customers"]) == (method, path, status, count)
        assert isinstance(entry["duration_ms"], float) and 0 <= entry["duration_ms"] < 10_000
        logged = datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert abs((now - logged).total_seconds()) < 120


@pytest.mark.parametrize("request_id", ["", "has space", "x" * 129, "semi;colon", "ünï", "a\tb"])
def test_an_unusable_request_id_is_replaced(server, request_id):
    response = call(server, "GET", "/ping", {}, request_id)
    generated = response.headers["X-Request-ID"]
    assert GENERATED_ID.fullmatch(generated)
    assert server.access_lines([generated])[generated][0]["path"] == "/ping"


@pytest.mark.parametrize("request_id", ["x" * 128, "A.b_c:d-1"])
def test_a_usable_request_id_is_kept(server, request_id):
    assert call(server, "GET", "/ping", {}, request_id).headers["X-Request-ID"] == request_id


def test_log_lines_stay_json_for_odd_paths(server):
    raw = '/nowhere/%22quoted%22%0Aline%5C{"x":1}'
    response = call(server, "GET", raw, {}, f"odd-{time.time_ns()}")
    assert response.status_code == 404
    rid = response.headers["X-Request-ID"]
    assert server.access_lines([rid])[rid][0]["path"] == unquote(raw)


def test_concurrent_requests_each_get_one_whole_line(server):
    bodies = [c if i % 2 else [c, c] for i, c in enumerate(customers(64))]
    ids = [f"conc-{server.kind}-{i}-{time.time_ns()}" for i in range(len(bodies))]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(lambda b, i: call(server, "POST", "/predict", {"json": b}, i).status_code, bodies, ids)
        )
    assert set(statuses) == {200}
    lines = server.access_lines(ids)  # each line of the file parses as JSON
    assert [len(lines[i]) for i in ids] == [1] * len(ids)
    assert [lines[i][0]["customers"] for i in ids] == [2 if n % 2 == 0 else 1 for n in range(len(ids))]


def test_log_request_writes_one_json_line(capsys, caplog):
    caplog.set_level(logging.INFO, logger="churn.access")  # as configure_logging sets it in the service
    logs.access_lines.flush()
    capsys.readouterr()
    logs.log_request("POST", '/a "b"\n\\c é', 422, 0.0012345, 3, "rid-1")
    assert capsys.readouterr().out == ""  # batched, until a flush
    logs.access_lines.flush()
    out = capsys.readouterr().out
    assert out.endswith("\n") and out.count("\n") == 1
    entry = json.loads(out)
    assert entry["path"] == '/a "b"\n\\c é'
    assert (entry["status"], entry["duration_ms"], entry["customers"], entry["request_id"]) == (422, 1.234, 3, "rid-1")


def test_access_lines_are_written_in_whole_lines_of_at_most_pipe_buf(monkeypatch):
    writes = []
    monkeypatch.setattr(logs.sys, "stdout", type("Out", (), {"write": writes.append, "flush": lambda self: None})())
    lines = logs.AccessLines()
    sent = [f'{{"n":{i},"pad":"{"x" * (i % 300)}"}}\n' for i in range(500)]
    for line in sent:
        lines.add(line)
    lines.flush()
    assert "".join(writes) == "".join(sent)
    assert len(writes) < len(sent) / 5
    assert all(len(w) <= select.PIPE_BUF and w.endswith("\n") for w in writes)


def test_access_lines_reach_stdout_within_a_second(capsys):
    lines = logs.AccessLines()
    lines.add("one line\n")
    deadline = time.monotonic() + 3 * lines.FLUSH_SECONDS
    out = ""
    while not out and time.monotonic() < deadline:
        time.sleep(0.05)
        out = capsys.readouterr().out
    assert out == "one line\n"


def test_other_log_lines_carry_the_request_id_of_their_request():
    formatter = logs.JsonFormatter()
    record = logging.LogRecord("churn", logging.ERROR, __file__, 1, "went %s", ("wrong",), None)

    def line() -> dict:
        return json.loads(formatter.format(record))

    assert "request_id" not in line()
    token = logs.request_id.set("rid-2")
    try:
        assert line()["request_id"] == "rid-2"
    finally:
        logs.request_id.reset(token)


# ---- OpenAPI


def resolve(document: dict, ref: str):
    node = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node) -> list[str]:
    if isinstance(node, dict):
        return [node.get("$ref")] * ("$ref" in node) + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def test_openapi_document_is_valid_and_complete(app):
    document = app.test_client().get("/openapi.json").get_json()
    validate(document)  # raises on an invalid OpenAPI 3.1 document
    assert document["openapi"].startswith("3.1")
    for ref in refs(document):  # the validator does not resolve every reference
        assert ref.startswith("#/") and resolve(document, ref) is not None
    # Every route of the app itself is documented with its methods; the pages (the web form, Swagger UI)
    # come from blueprints, whose endpoints are named "blueprint.view".
    routes = {
        rule.rule: rule.methods - {"HEAD", "OPTIONS"} for rule in app.url_map.iter_rules() if "." not in rule.endpoint
    }
    assert {path: {m.upper() for m in item} for path, item in document["paths"].items()} == routes
    error = {"$ref": "#/components/schemas/Error"}
    for item in document["paths"].values():
        for operation in item.values():
            assert {"404", "405", "500"} <= operation["responses"].keys()
            for status, response in operation["responses"].items():
                if status >= "400":
                    assert response["content"]["application/json"]["schema"] == error
                assert "X-Request-ID" in response["headers"]
    assert REQUEST_ID_PATTERN == f"^{REQUEST_ID.pattern}$"


def test_openapi_customer_schema_is_the_validation_schema(app):
    document = app.test_client().get("/openapi.json").get_json()
    customer = document["components"]["schemas"]["Customer"]
    assert customer["required"] == [f.name for f in FEATURES]
    for feature in FEATURES:
        schema = customer["properties"][feature.name]
        if feature.values:
            assert schema["enum"] == list(feature.accepted_values)
            continue
        if feature.name == "totalcharges":  # a number, or the dataset's text for one
            schema, text = schema["anyOf"]
            assert text["type"] == "string" and text["pattern"]
        assert schema["type"] == ("integer" if feature.integer else "number")
        assert (schema["minimum"], schema.get("maximum")) == (feature.minimum, feature.maximum)


@pytest.mark.parametrize("settings", [Settings(max_customers=7)])
def test_openapi_predict_documents_both_bodies_and_every_error(app):
    predict = app.test_client().get("/openapi.json").get_json()["paths"]["/predict"]["post"]
    single, batch = predict["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert single == {"$ref": "#/components/schemas/Customer"}
    assert batch == {"type": "array", "items": single, "minItems": 1, "maxItems": 7}
    assert {"200", "400", "413", "415", "422", "503"} <= predict["responses"].keys()


def test_openapi_served_reflects_the_environment(server):
    document = requests.get(f"{server.url}/openapi.json", timeout=5).json()
    validate(document)
    batch = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"][1]
    assert batch["maxItems"] == 5


RESPONSE_CASES = [
    ("GET", "/ping", {}),
    ("GET", "/health/live", {}),
    ("GET", "/health/ready", {}),
    ("GET", "/model", {}),
    ("GET", "/metrics", {}),
    ("GET", "/openapi.json", {}),
    ("POST", "/predict", {"json": SAMPLE_CUSTOMER}),
    ("POST", "/predict", {"json": customers(3)}),
    ("POST", "/predict", {"data": b"[", "content_type": "application/json"}),
    ("POST", "/predict", {"json": customers(4)}),
    ("POST", "/predict", {"data": "x", "content_type": "text/plain"}),
    ("POST", "/predict", {"json": [SAMPLE_CUSTOMER, dict(SAMPLE_CUSTOMER, contract="forever")]}),
    ("GET", "/nowhere", {}),
    ("DELETE", "/model", {}),
]


@pytest.mark.parametrize("settings", [Settings(max_customers=3)])
def test_responses_match_the_document(app):
    client = app.test_client()
    document = client.get("/openapi.json").get_json()
    statuses = set()
    for method, path, options in RESPONSE_CASES:
        response = client.open(path, method=method, **options)
        statuses.add(response.status_code)
        item = document["paths"].get(path, document["paths"]["/ping"])  # an unknown path answers like any
        operation = item.get(method.lower(), next(iter(item.values())))
        described = operation["responses"][str(response.status_code)]
        schema = described["content"][response.mimetype]["schema"]
        body = response.get_json() if response.mimetype == "application/json" else response.get_data(as_text=True)
        jsonschema.validate(body, {**schema, "components": document["components"]})
        assert re.fullmatch(REQUEST_ID_PATTERN, response.headers["X-Request-ID"])
    assert statuses == {200, 400, 404, 405, 413, 415, 422}


# ---- Swagger UI


def test_swagger_ui_page_and_assets_are_served_locally(server):
    redirect = requests.get(f"{server.url}/docs", allow_redirects=False, timeout=5)
    assert redirect.status_code == 308 and urlsplit(redirect.headers["Location"]).path == "/docs/"
    page = requests.get(f"{server.url}/docs/", timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert {"/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"} <= set(assets)
    for asset in assets:
        assert not urlsplit(asset).netloc, f"{asset} is not served by the service"
        response = requests.get(f"{server.url}{asset}", timeout=5)
        assert response.status_code == 200 and response.content, asset
    # Absolute URLs in the page may only point back to the service (the OAuth2 redirect page).
    for url in re.findall(r"https?://[^\"'\s]+", page.text):
        assert url.startswith(f"{server.url}/docs/"), url
    config = json.loads(re.search(r"var user_config = (\{.*?\});", page.text).group(1))
    assert config["url"] == "/openapi.json"
    # Swagger UI otherwise sends the document's address to validator.swagger.io for its badge.
    assert "validatorUrl" in config and config["validatorUrl"] is None
    # Swagger UI reads OpenAPI 3.1 from version 5 on.
    version = requests.get(f"{server.url}/docs/VERSION", timeout=5).text.strip()
    assert int(version.lstrip("v").split(".")[0]) >= 5, version


CHROMIUM = Path("/usr/bin/chromium")


def test_swagger_ui_works_offline_in_a_browser(server, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed: scripts/install_browser.sh installs it")
    from playwright.sync_api import sync_playwright

    # A host name other than localhost, as in production: Swagger UI skips some calls for localhost.
    host = "churn.test"
    origin = server.url.replace("127.0.0.1", host)
    outside = []

    def keep_local(route):
        if route.request.url.startswith(f"{origin}/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--host-resolver-rules=MAP {host} 127.0.0.1",
    ]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            page = browser.new_page()
            page.route("**/*", keep_local)
            page.goto(f"{origin}/docs/")
            operation = page.locator("#operations-Prediction-post_predict")
            operation.locator(".opblock-summary").click()
            operation.locator("button.try-out__btn").click()
            operation.locator("button.execute").click()
            status = operation.locator(".live-responses-table tbody .response-col_status").first
            status.wait_for(timeout=15_000)
            assert status.inner_text().strip().startswith("200")
            body = operation.locator(".live-responses-table tbody .microlight").first.inner_text()
            assert '"churn_probability"' in body
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            assert {p.replace("\u200b", "") for p in paths} >= {"/predict", "/health/ready", "/model", "/metrics"}
            page.screenshot(path=tmp_path / "docs.png", full_page=True)
        finally:
            browser.close()
    assert outside == []
