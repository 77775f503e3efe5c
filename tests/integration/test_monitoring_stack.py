"""compose.yaml and the Grafana files it mounts: read by docker-compose and podman-compose (Debian's, which
`make test` installs; neither starts a container here), and the dashboard checked against Grafana's dashboard model.
Every panel's query runs on a real Prometheus in tests/integration/test_prometheus.py."""

import subprocess

import jsonschema
import pytest
import yaml

from devtools import ROOT
from tests.prometheus import DASHBOARDS, MONITORING, dashboards

COMPOSE = ROOT / "compose.yaml"
PROVISIONING = MONITORING / "grafana" / "provisioning"

# What Grafana's dashboard model (its dashboard kind, schemaVersion 39: grafana/kinds/dashboard) requires of the
# parts this dashboard uses; Grafana publishes it in CUE, not as a JSON schema, so this subset is written from it.
GRID = {
    "type": "object",
    "required": ["x", "y", "w", "h"],
    "properties": {
        "x": {"type": "integer", "minimum": 0, "maximum": 23},
        "y": {"type": "integer", "minimum": 0},
        "w": {"type": "integer", "minimum": 1, "maximum": 24},
        "h": {"type": "integer", "minimum": 1},
    },
}
DATASOURCE = {"type": "object", "required": ["type", "uid"], "properties": {"type": {"const": "prometheus"}}}
TARGET = {
    "type": "object",
    "required": ["refId", "expr"],
    "properties": {"refId": {"type": "string"}, "expr": {"type": "string", "minLength": 1}, "datasource": DATASOURCE},
}
PANEL = {
    "type": "object",
    "required": ["id", "type", "title", "gridPos", "datasource", "targets"],
    "properties": {
        "id": {"type": "integer"},
        "type": {"enum": ["timeseries", "bargauge", "barchart", "stat", "table"]},
        "title": {"type": "string", "minLength": 1},
        "gridPos": GRID,
        "datasource": DATASOURCE,
        "targets": {"type": "array", "minItems": 1, "items": TARGET},
        "fieldConfig": {"type": "object", "required": ["defaults", "overrides"]},
        "transformations": {"type": "array", "items": {"type": "object", "required": ["id", "options"]}},
    },
}
DASHBOARD = {
    "type": "object",
    "required": ["uid", "title", "editable", "graphTooltip", "schemaVersion", "panels", "time"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "graphTooltip": {"enum": [0, 1, 2]},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "panels": {"type": "array", "minItems": 1, "items": PANEL},
        "time": {"type": "object", "required": ["from", "to"]},
    },
}


def test_docker_compose_reads_the_stack():
    run = subprocess.run(["docker-compose", "-f", COMPOSE, "config"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    services = yaml.safe_load(run.stdout)["services"]
    assert sorted(services) == ["churn", "grafana", "prometheus"]
    mounts = {
        volume.split(":")[1]: ROOT.joinpath(volume.split(":")[0])
        for service in services.values()
        for volume in service.get("volumes", [])
    }
    assert (mounts["/etc/prometheus"] / "prometheus.yml").is_file()  # the image's default configuration file
    assert mounts["/etc/grafana/provisioning"] == PROVISIONING
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "churn.yml").read_text())["providers"][0]
    assert mounts[provider["options"]["path"]] == DASHBOARDS
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (DASHBOARDS / home.removeprefix(provider["options"]["path"] + "/")).is_file()


def test_podman_compose_reads_the_stack():
    # --dry-run prints the podman commands; `true` stands for podman, so that no container or image is touched.
    run = subprocess.run(
        ["podman-compose", "--dry-run", "--podman-path", "true", "-f", COMPOSE, "up"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    compose = yaml.safe_load(COMPOSE.read_text())
    for name, service in compose["services"].items():
        assert f"--network-alias {name}" in run.stdout
        for image in [service.get("image")] if "image" in service else []:
            assert image in run.stdout
        for volume in service.get("volumes", []):
            source, target, mode = volume.split(":")
            assert f"-v {ROOT / source.removeprefix('./')}:{target}:{mode}" in run.stdout


@pytest.mark.parametrize("dashboard", dashboards(), ids=lambda d: d["uid"])
def test_the_dashboard_follows_grafanas_model_and_the_provisioned_datasource(dashboard):
    jsonschema.validate(dashboard, DASHBOARD)
    [source] = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells = set()
    for panel in panels:
        assert {panel["datasource"]["uid"]} | {t["datasource"]["uid"] for t in panel["targets"]} == {source["uid"]}
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
