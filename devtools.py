"""What the tests, bench/, loadtest/ and scripts/ share: the repository's files, the dataset's place, and the real
servers (gunicorn, waitress, and nginx as Elastic Beanstalk configures it) on a free loopback port, with gunicorn's
workers found in /proc.

Development only: it is not part of the image (.dockerignore) nor of the Elastic Beanstalk bundle (.ebignore).
"""

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from churn.model.data import DATA_FILE_NAME, DataError, data_candidates, find_data

ROOT = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
MODEL_FILE = ROOT / "model_C=1.0.bin"
PLATFORM_CONF_D = ROOT / ".platform" / "nginx" / "conf.d"
# Elastic Beanstalk's own nginx.conf, which includes the project's .platform files.
PLATFORM_NGINX_CONF = ROOT / "tests" / "nginx" / "eb-default-nginx.conf"
TEMP_PATH_KINDS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def dataset_path() -> Path:
    """The real dataset, where train.py looks for it: $CHURN_DATA, else ../shared/data beside the clone, else data/."""
    path = find_data()
    if path is None:
        candidates = ", ".join(str(p) for p in data_candidates())
        raise DataError(f"the dataset {DATA_FILE_NAME} is not in any of {candidates} (make train fetches it)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, interval: float = 0.05) -> bool:
    """Poll condition() until it is true or timeout seconds have passed; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready")
        try:
            if requests.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} was not ready within {timeout} s")


def gunicorn_command(port: int, workers: int = 2, app: str = "predict:app") -> list[str]:
    """gunicorn with the settings of gunicorn.conf.py (read from the working directory, ROOT) on 127.0.0.1:port."""
    return [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", str(workers), app]


def waitress_command(port: int) -> list[str]:
    return [str(BIN / "waitress-serve"), f"--listen=127.0.0.1:{port}", "predict:app"]


def stop(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM (a graceful stop) and wait; SIGKILL if it has not ended within timeout seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_server(command: list[str], port: int, env: dict | None = None, log_path: Path | None = None):
    """Yield (base_url, process) once /health/ready answers 200; SIGTERM and wait at the end."""
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        yield url, process
    finally:
        stop(process)
        if log_path:
            log.close()


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None:
        raise RuntimeError("nginx is not installed: `make test` installs it (scripts/install_debian.sh)")
    return found


@dataclass
class Proxy:
    url: str
    port: int
    directory: Path
    process: subprocess.Popen

    def error_log(self) -> str:
        return (self.directory / "logs" / "error.log").read_text()


@contextlib.contextmanager
def running_nginx(directory: Path, upstream_port: int):
    """Yield a Proxy once nginx listens: the platform's nginx.conf, and conf.d/ laid out as the platform lays it."""
    port = free_port()
    for folder in ("logs", "temp"):
        (directory / folder).mkdir(parents=True)
    conf_d = directory / "conf.d"
    shutil.copytree(PLATFORM_CONF_D, conf_d)
    # What the platform writes itself: the container's address (the first EXPOSEd port) as `upstream docker`.
    (conf_d / "elasticbeanstalk-nginx-docker-upstream.conf").write_text(
        f"upstream docker {{\n    server 127.0.0.1:{upstream_port};\n    keepalive 256;\n}}\n"
    )
    # Not the platform's: temporary files in this folder, not the package's /var/lib/nginx.
    (conf_d / "test_temp_paths.conf").write_text(
        "".join(f"{kind}_temp_path {directory / 'temp' / kind};\n" for kind in TEMP_PATH_KINDS)
    )
    conf = directory / "nginx.conf"
    conf.write_text(
        PLATFORM_NGINX_CONF.read_text()
        .replace("@USER@", getpass.getuser())
        .replace("@PREFIX@", str(directory))
        .replace("@PORT@", str(port))
    )
    command = [nginx_binary(), "-p", f"{directory}/", "-c", str(conf), "-e", str(directory / "logs" / "error.log")]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True)
    if checked.returncode:
        raise RuntimeError(f"nginx refuses the configuration:\n{checked.stderr}")
    process = subprocess.Popen([*command, "-g", "daemon off;"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited with {process.returncode}: {process.stderr.read()}")
            with contextlib.suppress(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("nginx did not listen within 10 s")
            time.sleep(0.05)
        yield Proxy(f"http://127.0.0.1:{port}", port, directory, process)
    finally:
        stop(process, timeout=10)


def worker_pids(master_pid: int) -> set[int]:
    """The master's children: gunicorn's workers."""
    children = set()
    for task in Path(f"/proc/{master_pid}/task").iterdir():
        children.update(int(pid) for pid in (task / "children").read_text().split())
    return children


def train_model(output: Path, C: float, n_splits: int = 2) -> Path:
    """A second model for the tests of reloads and challengers: train.py (with its sidecar) at C into output."""
    command = [sys.executable, "train.py", "--C", str(C), "--n-splits", str(n_splits), "--output", str(output)]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return output


def replace_model(source: Path, target: Path) -> None:
    """Put source's model file and sidecar at target as an operator should: each whole, by a rename."""
    from churn.model.modelfile import sidecar_path

    for origin, destination in ((source, target), (sidecar_path(source), sidecar_path(target))):
        staged = destination.with_name(destination.name + ".new")
        staged.write_bytes(origin.read_bytes())
        os.replace(staged, destination)
