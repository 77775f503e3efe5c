"""Real Prometheus (Debian's, which `make test` installs) for the tests: started on a free loopback port with the
committed monitoring/prometheus/prometheus.yml and rules.yml, queried over its HTTP API."""

import contextlib
import json
import subprocess
import time
from datetime import datetime
from pathlib import Path

import requests
import yaml

from devtools import ROOT, free_port, stop, wait_for

MONITORING = ROOT / "monitoring"
CONFIG = MONITORING / "prometheus" / "prometheus.yml"
RULES = MONITORING / "prometheus" / "rules.yml"
DASHBOARDS = MONITORING / "grafana" / "dashboards"
INTERVAL = "1s"  # scrapes and rule evaluations, for a test that waits for them


def derived_config(target: str) -> dict:
    """The committed configuration with only what a test changes: target for the service's address, the
    intervals, and the rule files by absolute path (the derived file lives elsewhere)."""
    config = yaml.safe_load(CONFIG.read_text())
    config["global"].update(scrape_interval=INTERVAL, evaluation_interval=INTERVAL)
    config["rule_files"] = [str(CONFIG.parent / name) for name in config["rule_files"]]
    [job] = config["scrape_configs"]
    [static] = job["static_configs"]
    static["targets"] = [target]
    return config


class Prometheus:
    def __init__(self, url: str):
        self.url = url

    def api(self, path: str, **params) -> dict | list:
        response = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        answer = response.json()
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list[dict]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return data["result"]

    def values(self, expr: str, label: str | None = None) -> dict:
        """Each series' value, keyed by its label `label` (None: one series, keyed None)."""
        return {s["metric"].get(label) if label else None: float(s["value"][1]) for s in self.query(expr)}

    def scrape_errors(self) -> list[str]:
        return [target["lastError"] for target in self.api("targets")["activeTargets"]]

    def alerts(self, name: str) -> list[dict]:
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name]

    def evaluated_since(self, moment: float) -> bool:
        """Whether every rule group has been evaluated from start to end since moment (a Unix time)."""
        groups = self.api("rules")["groups"]
        evaluated = [datetime.fromisoformat(group["lastEvaluation"]).timestamp() for group in groups]
        return bool(evaluated) and min(evaluated) > moment

    def wait_for_evaluation(self, timeout: float = 30) -> None:
        """Until every group has started and finished an evaluation after now."""
        start = time.time()
        assert wait_for(lambda: self.evaluated_since(start), timeout), "rules not evaluated within the timeout"


@contextlib.contextmanager
def running_prometheus(folder: Path, target: str):
    """Debian's prometheus with derived_config(target), its data in folder; a Prometheus once ready."""
    config = folder / "prometheus.yml"
    config.write_text(yaml.safe_dump(derived_config(target)))
    port = free_port()
    command = [
        "prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    log = open(folder / "prometheus.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: _ready(url, process), 30), (folder / "prometheus.log").read_text()[-3000:]
        yield Prometheus(url)
    finally:
        stop(process)
        log.close()


def _ready(url: str, process: subprocess.Popen) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"prometheus exited with {process.returncode}")
    try:
        return requests.get(f"{url}/-/ready", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


def dashboards() -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))]


def dashboard_queries() -> list[str]:
    """Every panel query of every dashboard, with Grafana's interval macro as a concrete range."""
    return [
        target["expr"].replace("$__rate_interval", "1m")
        for dashboard in dashboards()
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]
