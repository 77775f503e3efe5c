"""Settings: every variable in one place, typed, checked, documented; a bad one stops the start in one line."""

import ast
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from churn.settings import SettingError, Settings, configuration_table
from devtools import ROOT, free_port, gunicorn_command

ENV_NAMES = [f.metadata["env"] for f in fields(Settings)]


def test_the_configuration_page_is_the_settings_table():
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert configuration_table() in page, "run `python -m churn.settings` and paste the table into the page"


def test_from_environment():
    settings = Settings.from_env({"CHURN_THRESHOLD": "0.3", "CHURN_MAX_CUSTOMERS": "7", "PORT": "8080"})
    assert (settings.threshold, settings.max_customers, settings.port) == (0.3, 7, 8080)
    assert Settings.from_env({}) == Settings()
    assert Settings().model_file.name == "model_C=1.0.bin"
    assert Settings.from_env({"MODEL_FILE": "m.bin"}).model_file == Path("m.bin")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CHURN_THRESHOLD": "50"}, "CHURN_THRESHOLD must be between 0 and 1, not 50.0"),
        ({"CHURN_THRESHOLD": "nan"}, "CHURN_THRESHOLD must be a number, not 'nan'"),
        ({"CHURN_THRESHOLD": "half"}, "CHURN_THRESHOLD must be a number, not 'half'"),
        ({"CHURN_MAX_CUSTOMERS": "1.5"}, "CHURN_MAX_CUSTOMERS must be a whole number, not '1.5'"),
        ({"CHURN_MAX_BODY_BYTES": "0"}, "CHURN_MAX_BODY_BYTES must be a positive whole number, not 0"),
        ({"PORT": "http"}, "PORT must be a whole number, not 'http'"),
        ({"WEB_CONCURRENCY": "-2"}, "WEB_CONCURRENCY must be a positive whole number, not -2"),
        ({"GUNICORN_MAX_REQUESTS": "-1"}, "GUNICORN_MAX_REQUESTS must be a whole number of 0 or more, not -1"),
    ],
)
def test_a_bad_value_names_its_variable(environ, message):
    with pytest.raises(SettingError, match=re.escape(message)):
        Settings.from_env(environ)


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


def environment_reads(path: Path) -> list[str]:
    """Where a module reads the environment: os.environ / os.getenv outside an assignment to it."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and isinstance(node.ctx, ast.Load):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_only_the_settings_module_reads_the_environment():
    """One place reads configuration; gunicorn.conf.py may set PROMETHEUS_MULTIPROC_DIR for prometheus_client."""
    modules = [*sorted((ROOT / "churn").rglob("*.py")), ROOT / "predict.py", ROOT / "train.py", ROOT / "score.py"]
    reads = [where for path in modules if path.name != "settings.py" for where in environment_reads(path)]
    allowed = {"churn/spark.py", "score.py"}  # PYSPARK_PYTHON and PYSPARK_GATEWAY_PORT: Spark's own variables
    assert [where for where in reads if where.split(":")[0] not in allowed] == []
