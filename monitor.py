"""Monitoring of the served model from its prediction log (CHURN_PREDICTION_LOG, or --log URL).

python monitor.py outcomes FILE.csv [--log URL]   who really churned: columns customerID (or prediction_id), churned
                                                  (true/false, or the dataset's Churn: Yes/No), observed_at
                                                  (YYYY-MM-DD; today when absent)
python monitor.py report --output DIR [--log URL] DIR/report.html (plots beside it) and DIR/report.json
python monitor.py unpack [--log URL]              the service's packs into the predictions table, a row per
                                                  customer (report and outcomes do it first), for SQL of your own
"""

import argparse
import csv
import json
import sys
from pathlib import Path

from churn.settings import SettingError, Settings


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    outcomes = commands.add_parser("outcomes", help="load a CSV file of outcomes into the log")
    outcomes.add_argument("file", type=Path)
    report = commands.add_parser("report", help="write the live performance report")
    report.add_argument("--output", type=Path, required=True)
    unpack = commands.add_parser("unpack", help="unpack what the service logged into the predictions table")
    for command in (outcomes, report, unpack):
        command.add_argument("--log", help="the log's URL (default: CHURN_PREDICTION_LOG)")
    return parser.parse_args(argv)


def log_url(given: str | None) -> str:
    """The log's URL, checked as the service checks CHURN_PREDICTION_LOG."""
    url = Settings(prediction_log=given).prediction_log if given else Settings.from_env().prediction_log
    if url is None:
        raise SettingError("no prediction log: set CHURN_PREDICTION_LOG or pass --log URL")
    return url


def load_outcomes(path: Path, url: str) -> dict:
    from churn.monitor import outcomes
    from churn.monitor.store import Store

    with open(path, newline="", encoding="utf-8") as file:
        records = outcomes.csv_records(list(csv.DictReader(file)))
    read = outcomes.read_outcomes(outcomes.outcomes_adapter(max(1, len(records))), records=records)
    store = Store(url)
    try:
        return outcomes.add_outcomes(store, read)
    finally:
        store.close()


def unpack_or_report(store, args) -> str:
    """What `unpack` or `report` did, in a line."""
    if args.command == "unpack":
        return f"{store.unpack():,} customers unpacked into predictions"
    from churn.monitor.report import write_report

    report = write_report(store, args.output)
    return f"{args.output / 'report.html'}: {len(report['groups'])} month(s) and model version(s)"


def main(argv=None) -> int:
    args = parse_args(argv)
    from churn.monitor.outcomes import OutcomeError
    from churn.monitor.store import Store, StoreError

    try:
        url = log_url(args.log)
        if args.command == "outcomes":
            print(json.dumps(load_outcomes(args.file, url)))
        else:
            store = Store(url)
            try:
                print(unpack_or_report(store, args))
            finally:
                store.close()
    except OutcomeError as e:
        print(f"monitor.py: {e}", file=sys.stderr)
        for detail in e.detail:
            row = f"row {detail['index'] + 2}: " if "index" in detail else ""  # the header is line 1
            print(f"  {row}{detail['field'] or 'the row'}: {detail['message']}", file=sys.stderr)
        return 1
    except (SettingError, StoreError, OSError) as e:
        print(f"monitor.py: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
