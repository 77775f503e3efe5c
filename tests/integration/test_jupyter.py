"""The course's notebook opens with Jupyter from the project's own packages: `make jupyter`, and the venv's jupyter."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest
import requests

from devtools import ROOT, free_port

pytestmark = pytest.mark.slow

JUPYTER = Path(sys.executable).parent / "jupyter"


@pytest.mark.parametrize("subcommand, distribution", [("lab", "jupyterlab"), ("notebook", "notebook")])
def test_the_venv_s_jupyter_runs(subcommand, distribution):
    run = subprocess.run([str(JUPYTER), subcommand, "--version"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == version(distribution)


def test_make_jupyter_serves_the_notebooks_on_localhost_only(tmp_path):
    port = free_port()
    log_path = tmp_path / "jupyter.log"
    # Jupyter refuses to run as root without --allow-root (CI runs as root); a user's `make jupyter` needs neither.
    args = "--no-browser" + (" --allow-root" if os.geteuid() == 0 else "")
    with open(log_path, "wb") as log:
        # Its own session, so that the whole group (make and jupyter) is stopped at the end.
        make = subprocess.Popen(
            ["make", "jupyter", f"JUPYTER_PORT={port}", f"JUPYTER_ARGS={args}"],
            cwd=ROOT,
            env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            token = None
            while token is None and time.monotonic() < deadline and make.poll() is None:
                found = re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=(\w+)", log_path.read_text(errors="replace"))
                token = found and found.group(1)
                time.sleep(0.2)
            assert token, f"no address with a token in make jupyter's output:\n{log_path.read_text()[-3000:]}"
            contents = requests.get(f"{url}/api/contents", params={"token": token}, timeout=10)
            assert contents.status_code == 200, contents.text
            assert "churn-model.ipynb" in {item["name"] for item in contents.json()["content"]}
            assert requests.get(f"{url}/api/contents", timeout=10).status_code == 403  # no token, no access
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(make.pid, signal.SIGTERM)
            make.wait(timeout=30)
    # Bound to the loopback address alone: not reachable on the machine's other addresses.
    assert f"http://127.0.0.1:{port}/" in log_path.read_text()
    assert "0.0.0.0" not in log_path.read_text()
