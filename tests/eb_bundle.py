"""Run by tests/integration/test_elasticbeanstalk.py with the EB CLI's own virtual environment, in a copy of the
project: what `eb deploy` uploads, by the EB CLI's own code, and the Docker build context, by the Docker SDK's own code.
Writes {"bundle": [...], "context": [...]} (paths relative to the project) as JSON to the file named by argv[1]."""

import json
import os
import sys
import tempfile
import zipfile

from docker.utils.build import exclude_paths
from ebcli.core import fileoperations


def eb_deploy_bundle() -> list[str]:
    # What `eb deploy` does when the project has an .ebignore (ebcli.operations.commonops._zip_up_project).
    ignore_list = fileoperations.get_ebignore_list()
    if ignore_list is None:
        sys.exit("no .ebignore: eb deploy would zip git's last commit instead")
    with tempfile.TemporaryDirectory() as folder:
        zip_path = os.path.join(folder, "bundle.zip")
        fileoperations.zip_up_project(zip_path, ignore_list=ignore_list)
        with zipfile.ZipFile(zip_path) as bundle:
            return sorted(os.path.normpath(name) for name in bundle.namelist() if not name.endswith("/"))


def docker_build_context() -> list[str]:
    # .dockerignore read as docker.api.build.BuildApiMixin.build reads it.
    root = os.path.abspath(".")
    with open(os.path.join(root, ".dockerignore")) as f:
        patterns = [line.strip() for line in f.read().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    return sorted(p for p in exclude_paths(root, patterns) if os.path.isfile(os.path.join(root, p)))


if __name__ == "__main__":
    with open(sys.argv[1], "w") as out:
        json.dump({"bundle": eb_deploy_bundle(), "context": docker_build_context()}, out)
