"""docs/dashboard.png: the panels of monitoring/grafana/dashboards/churn.json, drawn with matplotlib from a real
Prometheus, not Grafana (which cannot be installed here).

It runs gunicorn and Debian's Prometheus with the committed rules (tests/prometheus.py), sends the dataset's customers
for 30 s and then, for a minute, only month-to-month fiber-optic ones with a few refused, and plots each panel's own
queries.

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


# A few customers refused during the drift, each with one bad value.
BAD_VALUES = ({"gender": "robot"}, {"Contract": "weekly"}, {"tenure": -1}, {"gender": "robot"})


def send(url: str, rows: pd.DataFrame, seconds: int, refuse: bool = False) -> None:
    """rows in a batch a second for `seconds` seconds, and a refused customer with each when refuse."""
    records = rows.to_dict("records")
    for i in range(seconds):
        batch = records[i * len(records) // seconds : (i + 1) * len(records) // seconds]
        requests.post(f"{url}/predict", json=batch, timeout=30).raise_for_status()
        if refuse:
            bad = {**batch[0], **BAD_VALUES[i % len(BAD_VALUES)]}
            requests.post(f"{url}/predict", json=bad, timeout=30)
        time.sleep(1)


def panel_box(grid: dict, rows: int, side: float) -> list[float]:
    """The panel's place on the figure, as Grafana lays out its 24 columns, with `side` for the labels on its left."""
    top = 0.95  # the figure's title above
    left, bottom = grid["x"] / 24, top * (1 - (grid["y"] + grid["h"]) / rows)
    width, height = grid["w"] / 24, top * grid["h"] / rows
    return [left + side, bottom + 0.04, width - side - 0.01, height - 0.08]


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
        ax.set_xlabel("seconds", fontsize=7)
        ax.legend(fontsize=6, ncol=4 if len(ax.lines) > 6 else 1, loc="upper left")
    for step in panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])[1:]:
        (ax.axhline if panel["type"] == "timeseries" else ax.axvline)(step["value"], color=step["color"], ls="--", lw=1)
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
                send(url, raw, 30)
                send(url, pd.concat([drifted] * 5), 60, refuse=True)
                prometheus.wait_for_evaluation()
                end = time.time()
                panels = dashboard["panels"]
                rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
                figure = plt.figure(figsize=(16, rows * ROW_HEIGHT + 0.6))
                for panel in panels:
                    side = 0.07 if panel["type"] == "bargauge" else 0.03  # room for the bars' names
                    draw_panel(figure.add_axes(panel_box(panel["gridPos"], rows, side)), panel, prometheus, start, end)
                figure.suptitle(
                    f"{dashboard['title']}: the dataset's customers for 30 s, then only month-to-month fiber for a "
                    "minute (panels drawn from Prometheus by scripts/dashboard_png.py, not Grafana)",
                    fontsize=11,
                )
                figure.savefig(output, dpi=80)
    print(f"wrote {output}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "dashboard.png")
