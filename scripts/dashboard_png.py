"""docs/dashboard.png: the panels of monitoring/grafana/dashboards/churn.json, drawn with matplotlib from a real
Prometheus, not Grafana (which cannot be installed here).

It runs gunicorn and Debian's Prometheus with the committed rules (tests/prometheus.py), sends the dataset's customers
for a minute and then only month-to-month fiber-optic ones with a few refused, and plots each panel's own queries.

    .venv/bin/python scripts/dashboard_png.py [docs/dashboard.png]
"""

import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import requests  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from devtools import ROOT, dataset_path, free_port, gunicorn_command, running_server, wait_for  # noqa: E402
from tests.prometheus import dashboards, running_prometheus  # noqa: E402

RATE_INTERVAL = "10s"  # Grafana's $__rate_interval for 1 s scrapes
ROW_HEIGHT = 0.45  # inches per unit of a panel's gridPos height


def send(url: str, rows: pd.DataFrame, seconds: float, refused: int = 0) -> None:
    """rows in batches spread over about `seconds`, and `refused` customers Prometheus will see refused."""
    batches = max(1, int(seconds))
    records = rows.to_dict("records")
    for i in range(batches):
        batch = records[i * len(records) // batches : (i + 1) * len(records) // batches]
        requests.post(f"{url}/predict", json=batch, timeout=30).raise_for_status()
        if i < refused:
            requests.post(f"{url}/predict", json={**batch[0], "gender": "robot"}, timeout=30)
        time.sleep(1)


def draw_panel(ax, panel: dict, prometheus, start: float, end: float) -> None:
    ax.set_title(panel["title"], fontsize=10, loc="left")
    for target in panel["targets"]:
        expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL)
        legend = target.get("legendFormat", "")
        if target.get("instant"):
            continue
        data = prometheus.api("query_range", query=expr, start=start, end=end, step=1)["result"]
        for series in data:
            times = [float(t) - start for t, _ in series["values"]]
            label = legend
            for key, value in series["metric"].items():
                label = label.replace("{{" + key + "}}", value)
            ax.plot(times, [float(v) for _, v in series["values"]], label=label, linewidth=1.2)
    instant = [t for t in panel["targets"] if t.get("instant")]
    if panel["type"] == "barchart":
        shares = {
            t["legendFormat"]: prometheus.values(t["expr"], "bin") for t in instant
        }  # the score's bins, live against training
        frame = pd.DataFrame(shares).sort_index(key=lambda index: index.astype(int))
        frame.plot.bar(ax=ax, rot=0, width=0.8)
        ax.set_xlabel("probability bin (training deciles)")
    elif instant:
        [target] = instant
        label = target["legendFormat"].strip("{}")
        values = prometheus.values(target["expr"], label)
        names = sorted(values, key=values.get)
        ax.barh(names, [values[n] for n in names], color="tab:orange")
    else:
        ax.set_xlabel("seconds")
        ax.legend(fontsize=7, ncol=2)
    ax.tick_params(labelsize=7)


def main(output: Path) -> None:
    raw = pd.read_csv(dataset_path(), dtype=str, keep_default_na=False)
    drifted = raw[(raw["Contract"] == "Month-to-month") & (raw["InternetService"] == "Fiber optic")]
    [dashboard] = dashboards()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "metrics").mkdir()
        port = free_port()
        env = {"PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics")}
        with running_server(gunicorn_command(port), port, env=env) as (url, _):
            with running_prometheus(folder, f"127.0.0.1:{port}") as prometheus:
                assert wait_for(lambda: prometheus.query("churn_feature_customers_total"), 30)
                start = time.time()
                send(url, raw, 60)
                send(url, drifted, 60, refused=20)
                prometheus.wait_for_evaluation()
                end = time.time()
                panels = dashboard["panels"]
                rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
                figure = plt.figure(figsize=(16, rows * ROW_HEIGHT), layout="constrained")
                grid = figure.add_gridspec(rows, 24)
                for panel in panels:
                    g = panel["gridPos"]
                    draw_panel(
                        figure.add_subplot(grid[g["y"] : g["y"] + g["h"], g["x"] : g["x"] + g["w"]]),
                        panel,
                        prometheus,
                        start,
                        end,
                    )
                figure.suptitle(
                    f"{dashboard['title']}: the dataset's customers for a minute, then only month-to-month fiber "
                    "(panels drawn from Prometheus by scripts/dashboard_png.py, not Grafana)",
                    fontsize=11,
                )
                figure.savefig(output, dpi=80)
    print(f"wrote {output}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "dashboard.png")
