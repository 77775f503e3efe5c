"""The lock verifies in a clean pip configuration and names no package index."""

import json
import os
import shutil
import subprocess

import pytest

from devtools import ROOT


def pipenv() -> str:
    found = shutil.which("pipenv") or (ROOT / ".tools" / "bin" / "pipenv")
    if not os.path.exists(found):
        pytest.fail("pipenv is missing: `make test` installs it into .tools/")
    return str(found)


def test_lock_verifies_without_this_machines_pip_configuration():
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIPENV_VERBOSITY": "-1"}
    run = subprocess.run([pipenv(), "verify"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "up-to-date" in run.stdout + run.stderr


def test_no_package_index_is_named():
    lock = json.loads((ROOT / "Pipfile.lock").read_text())
    assert lock["_meta"]["sources"] == []
    assert "[[source]]" not in (ROOT / "Pipfile").read_text()
    # Packages keep pipenv's source *name* ("pypi"); no index address may appear anywhere.
    assert "://" not in (ROOT / "Pipfile.lock").read_text() + (ROOT / "Pipfile").read_text()
