"""The real service refuses to start on a bad model file: predict.py and gunicorn exit with the loader's message,
and no code in a hostile file runs."""

import io
import os
import subprocess
import sys

import pytest
from sklearn.base import BaseEstimator

from churn.model.training import load_model
from devtools import MODEL_FILE, ROOT, free_port, gunicorn_command
from tests.helpers import OtherVersionPickler, hostile_pickles


def start(command: list[str], model_file, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "MODEL_FILE": str(model_file)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def hostile_model(tmp_path):
    sentinel = tmp_path / "pwned"
    data, refused_global = hostile_pickles(sentinel)["os.system"]
    path = tmp_path / "model.bin"
    path.write_bytes(data)
    return path, sentinel, refused_global


def test_predict_py_does_not_start_on_a_hostile_model(hostile_model):
    path, sentinel, refused_global = hostile_model
    run = start([sys.executable, "-c", "import predict"], path)
    assert run.returncode != 0
    assert f"ModelLoadError: model file {path}: refused global {refused_global}" in run.stderr
    assert not sentinel.exists()


@pytest.mark.parametrize("problem", ["missing", "empty", "truncated", "other version"])
def test_predict_py_does_not_start_on_a_bad_model(problem, tmp_path):
    path = tmp_path / "model.bin"
    if problem == "empty":
        path.write_bytes(b"")
    elif problem == "truncated":
        path.write_bytes(MODEL_FILE.read_bytes()[:-10])
    elif problem == "other version":
        buffer = io.BytesIO()
        OtherVersionPickler(buffer, "0.24.2", (BaseEstimator,)).dump(load_model(MODEL_FILE))
        path.write_bytes(buffer.getvalue())
    run = start([sys.executable, "-c", "import predict"], path)
    assert run.returncode != 0
    assert (
        f"ModelLoadError: model file {path}" in run.stderr
        or f"ModelLoadError: cannot read model file {path}" in run.stderr
    )


def test_gunicorn_exits_on_a_hostile_model_without_serving(hostile_model):
    path, sentinel, refused_global = hostile_model
    port = free_port()
    run = start(gunicorn_command(port), path)
    assert run.returncode != 0
    assert f"model file {path}: refused global {refused_global}" in run.stdout + run.stderr
    assert not sentinel.exists()
