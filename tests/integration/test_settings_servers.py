"""Settings under real gunicorn and predict.py: a bad value stops the start in one line."""

import subprocess
import sys

import pytest

from devtools import ROOT, free_port, gunicorn_command


@pytest.mark.parametrize("server", ["gunicorn", "python"])
def test_a_bad_value_stops_the_start_in_one_line(server):
    port = free_port()
    command = gunicorn_command(port) if server == "gunicorn" else [sys.executable, "predict.py"]
    run = subprocess.run(
        command,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "CHURN_THRESHOLD": "2"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if "CHURN_THRESHOLD" in line]
    assert lines == ["churn: SettingError: CHURN_THRESHOLD must be between 0 and 1, not 2.0"], run.stderr
