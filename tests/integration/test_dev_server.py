"""`python predict.py`, Flask's development server: its stdout is JSON lines too, without werkzeug's colours."""

import json
import os
import signal
import subprocess
import sys

import requests

from churn.model.schema import SAMPLE_CUSTOMER
from devtools import ROOT, free_port, stop, wait_ready


def test_the_development_server_writes_json_lines_without_ansi_colours(tmp_path):
    port = free_port()
    stdout = tmp_path / "stdout.log"
    # werkzeug colours whether or not stdout is a terminal; TERM says one would show the colours.
    env = {**os.environ, "PORT": str(port), "TERM": "xterm-256color", "PYTHONUNBUFFERED": "1"}
    with open(stdout, "wb") as out:
        # SIGINT as a terminal has it: a runner started in the background (CI's may be) passes it on ignored, and
        # Python then never turns it into the KeyboardInterrupt that stops the server cleanly.
        server = subprocess.Popen(
            [sys.executable, "predict.py"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.PIPE,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, server)
            # werkzeug colours each of these statuses differently (200 is the one it leaves plain).
            assert requests.post(f"{url}/predict", json=SAMPLE_CUSTOMER, timeout=10).status_code == 200
            assert requests.post(f"{url}/predict", json={}, timeout=10).status_code == 422
            assert requests.get(f"{url}/nowhere", timeout=10).status_code == 404
            assert requests.get(f"{url}/docs", allow_redirects=False, timeout=10).status_code == 308
        finally:
            server.send_signal(signal.SIGINT)  # a clean exit: the access lines still buffered are written
            try:
                server.wait(timeout=10)  # before stop()'s SIGTERM, which would end it before it writes them
            finally:
                stop(server)
    text = stdout.read_bytes().decode()
    assert "\x1b" not in text
    entries = []
    for line in text.splitlines():
        entries.append(json.loads(line))  # every line, the server's banner included
        assert "\x1b" not in entries[-1]["message"]  # nor escaped in the JSON
    werkzeug = [entry["message"] for entry in entries if entry["logger"] == "werkzeug"]
    assert any("Serving Flask app" in message for message in werkzeug)
    assert any("WARNING: This is a development server" in message for message in werkzeug)
    for status in ("200", "422", "404", "308"):
        assert any(f'HTTP/1.1" {status}' in message for message in werkzeug), status
    access = [(entry["path"], entry["status"]) for entry in entries if entry["logger"] == "churn.access"]
    assert set(access) - {("/health/ready", 200)} == {
        ("/predict", 200),
        ("/predict", 422),
        ("/nowhere", 404),
        ("/docs", 308),
    }
