"""A full or read-only metrics disk costs metrics, never answers: a real tmpfs, mounted by the test and filled."""

import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from churn.model.schema import SAMPLE_CUSTOMER
from devtools import free_port, gunicorn_command, running_server, wait_for, worker_pids

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs, mounted here (the tests run as root, as CI does) and unmounted after."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> None:
    """Write until the filesystem refuses: ENOSPC."""
    with open(disk / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    assert os.statvfs(disk).f_bavail == 0


def statuses(url: str, n: int) -> list[int]:
    def one(_):
        return requests.post(f"{url}/predict", json=SAMPLE_CUSTOMER, timeout=10).status_code

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(n)))


def degraded(url: str) -> float:
    response = requests.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    line = next(line for line in response.text.splitlines() if line.startswith("churn_metrics_degraded "))
    return float(line.split()[1])


def test_a_disk_that_fills_while_serving_costs_metrics_not_answers(small_disk):
    metrics_dir = small_disk / "metrics"
    metrics_dir.mkdir()
    port = free_port()
    with running_server(gunicorn_command(port), port, env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}) as (
        url,
        master,
    ):
        assert statuses(url, 50) == [200] * 50
        assert degraded(url) == 0
        fill(small_disk)
        # New series (other endpoints and statuses) and new workers, on the full disk.
        assert statuses(url, 300) == [200] * 300
        assert requests.post(f"{url}/predict", json={}, timeout=10).status_code == 422
        assert requests.get(f"{url}/health/ready", timeout=10).status_code == 200
        for pid in worker_pids(master.pid):
            os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: len(worker_pids(master.pid)) == 2, 20)
        assert statuses(url, 300) == [200] * 300
        assert degraded(url) == 1
        assert master.poll() is None, "the master died"


@pytest.mark.parametrize("state", ["full", "read-only"])
def test_a_service_started_on_a_full_or_read_only_disk_answers(small_disk, state):
    metrics_dir = small_disk / "metrics"
    metrics_dir.mkdir()
    if state == "full":
        fill(small_disk)
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    port = free_port()
    with running_server(gunicorn_command(port), port, env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}) as (
        url,
        master,
    ):
        assert statuses(url, 200) == [200] * 200
        assert requests.post(f"{url}/explain", json=SAMPLE_CUSTOMER, timeout=10).status_code == 200
        assert degraded(url) == 1
        assert master.poll() is None
