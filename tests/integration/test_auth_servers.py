"""API keys through real gunicorn: every check of tests/auth_checks.py on the request line as written, keys from a
file, no key in any log line, 401s counted, a bad key file stopping the start, and rotation on SIGHUP."""

import http.client
import json
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from devtools import free_port, gunicorn_command, running_server, wait_for, worker_pids
from tests.auth_checks import BODY, JSON, KEY, OTHER_KEY, KeyChecks


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


class TestThroughGunicorn(KeyChecks):
    @pytest.fixture
    def send(self, gunicorn_with_keys):
        """send(method, path, headers) -> (status, headers, body), for a service with KEY and OTHER_KEY."""
        return lambda method, path, headers=None: raw(gunicorn_with_keys, method, path, headers)


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
            old = worker_pids(master.pid)
            master.send_signal(signal.SIGHUP)
            # gunicorn starts the new workers before it stops the old ones, which answer until they are gone: the
            # reload is done when none of them is left (a few answers from new workers alone do not show it).
            assert wait_for(lambda: not worker_pids(master.pid) & old, 20), "the old workers did not stop"
            assert all(status(k) == s for k, s in expected.items() for _ in range(4)), expected

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
