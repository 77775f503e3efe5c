"""API keys: the loader, and the middleware through Flask's test client and through real gunicorn."""

import http.client
import json
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote

import pytest

from churn.auth import open_endpoints
from churn.schema import SAMPLE_CUSTOMER
from churn.service import create_app
from churn.settings import Settings
from devtools import free_port, gunicorn_command, running_server, wait_for

KEY = "k3y-Only.The_Test~Knows"
OTHER_KEY = "second-key-for-rotation"
BODY = json.dumps(SAMPLE_CUSTOMER).encode()
JSON = {"Content-Type": "application/json"}

# Every way of spelling a protected request that a router, a proxy or a server might read as another path.
# None may be answered without a key.
PROTECTED = [
    ("POST", "/predict"),  # a valid body of known length: the fast path
    ("HEAD", "/predict"),
    ("GET", "/predict"),
    ("OPTIONS", "/predict"),
    ("POST", "/predict/"),
    ("POST", "//predict"),
    ("POST", "/predict?api_key=x"),
    ("POST", "/PREDICT"),
    ("POST", "/%70redict"),
    ("POST", "/predict%2F"),
    ("POST", "/./predict"),
    ("POST", "/ping/../predict"),
    ("POST", "/health/../predict"),
    ("POST", "/explain"),
    ("POST", "/explain/"),
    ("POST", "/EXPLAIN"),
    ("POST", "//explain"),
    ("GET", "/model"),
    ("HEAD", "/model"),
    ("GET", "/model/"),
    ("GET", "//model"),
    ("GET", "/MODEL"),
    ("GET", "/metrics"),
    ("GET", "/metrics?x=/ping"),
    ("GET", "/%6detrics"),
    ("GET", "/ping/"),
    ("GET", "/PING"),
    ("GET", "/health/"),
    ("GET", "/health/live/"),
    ("GET", "/health/anything"),
    ("GET", "/nowhere"),
]
# The probes, and the documents a browser needs before it can ask for a key.
OPEN = [
    ("GET", "/ping", 200),
    ("HEAD", "/ping", 200),
    ("GET", "/ping?x=1", 200),
    # Spellings the app itself routes to /ping: still the probe, whatever the spelling.
    ("GET", "/%70ing", 200),
    ("GET", "//ping", 200),
    ("GET", "/health/live", 200),
    ("GET", "/health/ready", 200),
    ("GET", "/", 200),
    ("GET", "/openapi.json", 200),
    ("GET", "/docs", 308),
    ("GET", "/docs/", 200),
    ("GET", "/docs/swagger-ui.css", 200),
]


@pytest.fixture(params=["flask", "gunicorn"])
def send(request, served_model):
    """send(method, path, headers) -> (status, headers, body), for a service with KEY and OTHER_KEY."""
    if request.param == "flask":
        client = create_app(served_model, Settings(api_keys=frozenset({KEY, OTHER_KEY}))).test_client()

        def through_flask(method, path, headers=None):
            # The environ a server makes of this request line (the test client would read "//model" as a host).
            path_info, _, query = path.partition("?")
            response = client.open(
                method=method,
                headers={**JSON, **(headers or {})},
                data=BODY if method == "POST" else None,
                environ_overrides={"PATH_INFO": unquote(path_info), "QUERY_STRING": query},
            )
            return response.status_code, response.headers, response.get_data()

        yield through_flask
    else:
        port = request.getfixturevalue("gunicorn_with_keys")
        yield lambda method, path, headers=None: raw(port, method, path, headers)


@pytest.fixture(scope="module")
def gunicorn_with_keys():
    port = free_port()
    with running_server(gunicorn_command(port), port, env={"CHURN_API_KEYS": f" {KEY} ,{OTHER_KEY},"}):
        yield port


def raw(port: int, method: str, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """The request line exactly as written: http.client neither normalizes nor quotes the path."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, BODY if method == "POST" else None, {**JSON, **(headers or {})})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def expect_401(status, headers, body, message: str) -> None:
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    if body:  # HEAD has none
        assert headers["Content-Type"] == "application/json"
        assert json.loads(body) == {"error": message, "detail": []}


REQUIRED = "An API key is required: send Authorization: Bearer <key> or X-API-Key: <key>"


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_no_spelling_of_a_protected_request_passes_without_a_key(send, method, path):
    status, headers, body = send(method, path)
    expect_401(status, headers, body, REQUIRED)
    status, headers, body = send(method, path, {"Authorization": "Bearer wrong"})
    expect_401(status, headers, body, "The API key is not valid")


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_with_a_key_the_app_answers_as_it_would(send, method, path):
    status, _, _ = send(method, path, {"X-API-Key": KEY})
    assert status != 401


@pytest.mark.parametrize(("method", "path", "status"), OPEN)
def test_probes_and_documents_need_no_key(send, method, path, status):
    assert send(method, path)[0] == status


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {KEY}"},
        {"Authorization": f"bearer   {KEY} "},
        {"Authorization": f"Bearer {OTHER_KEY}"},
        {"X-API-Key": KEY},
        {"X-API-Key": f" {OTHER_KEY}"},
        {"Authorization": "Bearer wrong", "X-API-Key": KEY},
    ],
    ids=["bearer", "bearer-spaced", "bearer-second-key", "x-api-key", "x-api-key-second", "either-header"],
)
def test_a_valid_key_in_either_header_scores(send, headers):
    status, _, body = send("POST", "/predict", headers)
    assert status == 200, body
    assert 0 <= json.loads(body)["churn_probability"] <= 1


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": KEY},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {KEY}x"},
        {"Authorization": f"Bearer {KEY[:-1]}"},
        {"X-API-Key": KEY.upper()},
        {"X-API-Key": f"{KEY},{OTHER_KEY}"},
        {"X-Api-Key-Extra": KEY},
    ],
    ids=["no-scheme", "basic", "empty-bearer", "longer", "shorter", "case", "two-keys", "other-header"],
)
def test_anything_but_a_valid_key_is_401(send, headers):
    status, response_headers, body = send("POST", "/predict", headers)
    assert status == 401
    assert response_headers["WWW-Authenticate"].startswith("Bearer")
    assert KEY.encode() not in body and KEY.upper().encode() not in body


def test_no_key_ever_reaches_a_log_line_and_401s_are_counted(tmp_path):
    port = free_port()
    log = tmp_path / "stdout.log"
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {"CHURN_API_KEYS": KEY, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with running_server(gunicorn_command(port), port, env=env, log_path=log):
        sent = [
            {"Authorization": f"Bearer {KEY}"},
            {"X-API-Key": KEY},
            {"Authorization": f"Bearer {KEY}-wrong"},
            {"X-API-Key": f"{KEY}-wrong"},
            {},
        ]
        statuses = [raw(port, "POST", f"/predict?key={i}", headers)[0] for i, headers in enumerate(sent)]
        assert statuses == [200, 200, 401, 401, 401]
        status, _, metrics = raw(port, "GET", "/metrics", {"X-API-Key": KEY})
        assert status == 200
    counted = re.search(rb'churn_http_requests_total\{endpoint="/predict",method="POST",status="401"\} (\S+)', metrics)
    assert counted and float(counted.group(1)) == 3
    text = log.read_text()
    access = [json.loads(line) for line in text.splitlines() if '"logger":"churn.access"' in line]
    assert sorted(e["status"] for e in access if e["path"] == "/predict") == [200, 200, 401, 401, 401]
    assert KEY not in text


def test_keys_from_a_file(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"\n  {KEY}  \n\n{OTHER_KEY}\n")
    port = free_port()
    with running_server(gunicorn_command(port), port, env={"CHURN_API_KEYS_FILE": str(keys)}):
        assert raw(port, "POST", "/predict")[0] == 401
        assert raw(port, "POST", "/predict", {"X-API-Key": KEY})[0] == 200
        assert raw(port, "POST", "/predict", {"Authorization": f"Bearer {OTHER_KEY}"})[0] == 200
        assert raw(port, "GET", "/health/ready")[0] == 200


def test_the_open_endpoints_are_the_apps_probes_and_documents(app):
    """Openness is a marker on each view (or its blueprint): the probes and documents have it, and every other
    endpoint (a new one too) needs a key."""
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    opened = open_endpoints(app)
    assert opened == {
        "api.ping",
        "api.live",
        "api.ready",
        "api.openapi_json",
        "web.index",
        "web.static",
        "swagger_ui.show",
    }
    assert {"api.predict", "api.explain", "api.model_card", "api.metrics_exposition"} == endpoints - opened


# ---- The loader


def load_api_keys(environ: dict) -> frozenset[str]:
    return Settings.from_env(environ).api_keys


def test_unset_means_open():
    assert load_api_keys({}) == frozenset()


def test_keys_are_split_and_trimmed(tmp_path):
    assert load_api_keys({"CHURN_API_KEYS": f" {KEY},, {OTHER_KEY} ,"}) == {KEY, OTHER_KEY}
    path = tmp_path / "keys"
    path.write_text(f"{KEY}\r\n\n   \n {OTHER_KEY}\t\n")
    assert load_api_keys({"CHURN_API_KEYS_FILE": str(path)}) == {KEY, OTHER_KEY}
    assert Settings.from_env({"CHURN_API_KEYS": KEY}).api_keys == {KEY}


def test_settings_never_show_the_keys():
    assert KEY not in repr(Settings(api_keys=frozenset({KEY})))


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CHURN_API_KEYS": ""}, "CHURN_API_KEYS is set but holds no key"),
        ({"CHURN_API_KEYS": " , ,"}, "CHURN_API_KEYS is set but holds no key"),
        ({"CHURN_API_KEYS": f"{KEY},two words"}, "Key 2 of CHURN_API_KEYS has characters"),
        ({"CHURN_API_KEYS": f"{KEY}é"}, "Key 1 of CHURN_API_KEYS has characters"),
        ({"CHURN_API_KEYS": KEY, "CHURN_API_KEYS_FILE": "/nonexistent"}, "not both"),
        ({"CHURN_API_KEYS_FILE": "/nonexistent/keys"}, "cannot be read: No such file or directory"),
        ({"CHURN_API_KEYS_FILE": "/"}, "cannot be read: Is a directory"),
    ],
)
def test_a_configuration_that_cannot_work_stops_the_start(environ, message):
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        load_api_keys(environ)
    assert KEY not in str(error.value)


def test_an_empty_or_unreadable_key_file_stops_gunicorn_with_a_clear_message(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n \n")
    unreadable = tmp_path / "binary"
    unreadable.write_bytes(b"\xff\xfe" + KEY.encode())
    for path, message in [(empty, "is set but holds no key"), (unreadable, "cannot be read: UnicodeDecodeError")]:
        port = free_port()
        log = tmp_path / f"{path.name}.log"
        with pytest.raises(RuntimeError, match="exited"):
            with running_server(gunicorn_command(port), port, env={"CHURN_API_KEYS_FILE": str(path)}, log_path=log):
                pass
        text = Path(log).read_text()
        assert f"CHURN_API_KEYS_FILE ({path}) {message}" in text, text[-2000:]
        assert KEY not in text


def test_a_key_rotated_in_the_file_takes_effect_on_sighup_with_no_failed_request(tmp_path):
    """The README's rotation: add the new key, SIGHUP, move the clients, remove the old key, SIGHUP."""
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY}\n")
    port = free_port()
    with running_server(gunicorn_command(port), port, env={"CHURN_API_KEYS_FILE": str(keys)}) as (_, master):

        def status(key: str) -> int:
            return raw(port, "POST", "/predict", {"X-API-Key": key})[0]

        def after_sighup(expected: dict[str, int]) -> None:
            master.send_signal(signal.SIGHUP)
            # Old workers finish what they hold while new ones start: until then either may answer.
            assert wait_for(lambda: all(status(k) == s for k, s in expected.items() for _ in range(4)), 20), expected

        assert (status(KEY), status(OTHER_KEY)) == (200, 401)
        keys.write_text(f"{KEY}\n{OTHER_KEY}\n")
        after_sighup({KEY: 200, OTHER_KEY: 200})
        stop = threading.Event()
        with ThreadPoolExecutor(1) as pool:
            moved = pool.submit(lambda: [status(OTHER_KEY) for _ in iter(stop.is_set, True)])
            keys.write_text(f"{OTHER_KEY}\n")
            after_sighup({KEY: 401, OTHER_KEY: 200})
            stop.set()
            statuses = moved.result()
        assert statuses and set(statuses) == {200}, f"{len(statuses)} requests with the new key: {set(statuses)}"
