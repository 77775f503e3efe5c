"""`make serve` installs only what serving needs, `make test` adds the rest, and the two share one .venv: its
markers (.venv/.synced-serve, .venv/.synced) say which level the lock was installed at."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools import ROOT, free_port, stop, wait_ready

SERVE_STEP = ".tools/bin/pipenv requirements --hash > .venv/requirements-serve.txt"
DEV_STEP = ".tools/bin/pipenv requirements --dev-only --hash > .venv/requirements-dev.txt"
GUNICORN = ".venv/bin/gunicorn predict:app"
LOCK = json.loads((ROOT / "Pipfile.lock").read_text())
# What virtualenv puts in every env before the lock's packages.
SEEDS = {"pip", "setuptools", "wheel"}


def make(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=folder,
        env={**os.environ, "MAKEFLAGS": "", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def planned(folder: Path, target: str) -> list[str]:
    """The commands `make -n TARGET` would run (make's own dry run: nothing is installed)."""
    run = make(folder, "-n", target)
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()


def age(path: Path, seconds: float) -> None:
    os.utime(path, (time.time() - seconds, time.time() - seconds))


@pytest.fixture
def project(tmp_path):
    """The Makefile and the lock in a folder of their own, with a .venv that make takes as made."""
    for name in ("Makefile", "Pipfile", "Pipfile.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    age(tmp_path / "Pipfile.lock", 100)
    (tmp_path / ".tools" / "bin").mkdir(parents=True)
    (tmp_path / ".tools" / "bin" / "pipenv").symlink_to(shutil.which("true"))
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(sys.executable)
    return tmp_path


def test_a_new_env_gets_only_the_serving_level_from_serve_and_both_from_test(project):
    serve = planned(project, "serve")
    assert SERVE_STEP in serve and DEV_STEP not in serve and serve[-1] == GUNICORN
    test = planned(project, "test")
    assert test.index(SERVE_STEP) < test.index(DEV_STEP) < test.index("touch .venv/.synced")


def test_a_serving_env_is_left_as_it_is_by_serve_and_completed_by_test(project):
    (project / ".venv" / ".synced-serve").touch()
    assert planned(project, "serve") == [GUNICORN]
    test = planned(project, "test")
    assert DEV_STEP in test and SERVE_STEP not in test


def test_serve_never_makes_a_development_env_a_serving_one(project):
    (project / ".venv" / ".synced-serve").touch()
    (project / ".venv" / ".synced").touch()
    assert planned(project, "serve") == [GUNICORN]
    # A new lock: serve brings the whole env up to date, its development packages too.
    age(project / ".venv" / ".synced-serve", 200)
    age(project / ".venv" / ".synced", 200)
    serve = planned(project, "serve")
    assert serve.index(SERVE_STEP) < serve.index(DEV_STEP) < serve.index(GUNICORN)
    assert "touch .venv/.synced" in serve


@pytest.mark.slow
def test_make_serve_on_a_fresh_clone_installs_the_serving_packages_visibly_and_serves(tmp_path):
    clone = tmp_path / "churn"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    if (ROOT / ".tools" / "bin" / "pipenv").exists():
        (clone / ".tools").symlink_to(ROOT / ".tools")  # the same pipenv; installing it again proves nothing
    port = free_port()
    env = {**os.environ, "MAKEFLAGS": "", "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port}"}
    output = tmp_path / "make.log"
    with open(output, "wb") as log:
        serve = subprocess.Popen(["make", "--no-print-directory", "serve"], cwd=clone, env=env, stdout=log, stderr=log)
        try:
            wait_ready(f"http://127.0.0.1:{port}", serve, timeout=600)
            # The client needs only what serving needs.
            client = subprocess.run(
                [".venv/bin/python", "predict_test.py", "--url", f"http://127.0.0.1:{port}/predict"],
                cwd=clone,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert client.returncode == 0, client.stderr
            assert json.loads(client.stdout[: client.stdout.rindex("}") + 1])["churn"] is True
        finally:
            stop(serve)
    shown = output.read_text()
    # Progress: pip shows each package of the lock's serving level as it takes it, one line per requirement
    # ("Collecting flask==3.1.3 (from -r .venv/requirements-serve.txt (line 4))", or "Processing" a local file; a
    # requirement with an extra is "(from psycopg[binary]==3.3.9->-r .venv/requirements-serve.txt (line 13))").
    for line in range(1, len(LOCK["default"]) + 1):
        assert f"-r .venv/requirements-serve.txt (line {line}))" in shown, line
    installed = shown[shown.index("Successfully installed") :].split("\n")[0].split()[2:]
    assert sorted(installed) == sorted(f"{name}-{entry['version'][2:]}" for name, entry in LOCK["default"].items())
    installed = subprocess.run(
        [".venv/bin/python", "-m", "pip", "list", "--format=json"], cwd=clone, capture_output=True, text=True
    )
    names = {p["name"].lower().replace("_", "-") for p in json.loads(installed.stdout)}
    assert names - SEEDS == set(LOCK["default"])  # the Pipfile's [packages] and what they need, no more
    assert (clone / ".venv" / ".synced-serve").exists() and not (clone / ".venv" / ".synced").exists()
    # The serving level is there: serve starts at once; test would add the development level.
    assert planned(clone, "serve") == [GUNICORN]
    assert DEV_STEP in planned(clone, "test")
