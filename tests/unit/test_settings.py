"""Settings: every variable in one place, typed, checked, documented; a bad one stops the start in one line."""

import ast
import os
import re
from dataclasses import fields
from pathlib import Path

import pytest

from churn.settings import SettingError, Settings, available_cpus, configuration_table
from devtools import ROOT
from tests.auth_checks import KEY, OTHER_KEY

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
        ({"GUNICORN_WORKER_CLASS": "gevent"}, "GUNICORN_WORKER_CLASS must be one of gthread, sync, not 'gevent'"),
        ({"GUNICORN_THREADS": "0"}, "GUNICORN_THREADS must be a positive whole number, not 0"),
        ({"GUNICORN_KEEPALIVE": "-1"}, "GUNICORN_KEEPALIVE must be a whole number of 0 or more, not -1"),
    ],
)
def test_a_bad_value_names_its_variable(environ, message):
    with pytest.raises(SettingError, match=re.escape(message)):
        Settings.from_env(environ)


@pytest.mark.parametrize(
    ("cpu_max", "cpus"),
    [("max 100000\n", None), ("200000 100000\n", 2), ("150000 100000\n", 2), ("50000 100000\n", 1), (None, None)],
    ids=["no-quota", "two-cpus", "one-and-a-half", "half-a-cpu", "no-cgroup-file"],
)
def test_workers_follow_the_cpus_a_container_may_use(tmp_path, cpu_max, cpus):
    """None: the CPUs the process may run on; else a container's quota, rounded up, when it allows fewer."""
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max)
    affinity = len(os.sched_getaffinity(0))
    assert available_cpus(path) == (affinity if cpus is None else min(cpus, affinity))
    assert Settings().workers == available_cpus()
    assert Settings.from_env({"WEB_CONCURRENCY": "3"}).workers == 3


def test_settings_from_environment():
    assert Settings.from_env({"CHURN_THRESHOLD": "0.3", "CHURN_MAX_CUSTOMERS": "7"}) == Settings(0.3, 7)
    with pytest.raises(ValueError, match="CHURN_THRESHOLD"):
        Settings.from_env({"CHURN_THRESHOLD": "50"})


def environment_reads(path: Path) -> list[str]:
    """Where a module reads the environment: os.environ / os.getenv outside an assignment to it."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        attribute = isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load)
        if attribute and node.attr in ("environ", "getenv") and getattr(node.value, "id", None) == "os":
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_only_the_settings_module_reads_the_environment():
    """One place reads configuration; gunicorn.conf.py may set PROMETHEUS_MULTIPROC_DIR for prometheus_client."""
    scripts = ("predict.py", "predict_test.py", "train.py", "score.py")
    modules = [*sorted((ROOT / "churn").rglob("*.py")), *(ROOT / name for name in scripts)]
    reads = [where for path in modules if path.name != "settings.py" for where in environment_reads(path)]
    # PYSPARK_PYTHON and PYSPARK_GATEWAY_PORT, Spark's own variables; SCRIPT_NAME, gunicorn's, read where gunicorn does.
    allowed = {"churn/batch/spark.py", "score.py", "churn/serve/plainhttp.py"}
    assert [where for where in reads if where.split(":")[0] not in allowed] == []


# ---- API keys (CHURN_API_KEYS, CHURN_API_KEYS_FILE)


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
