"""Batch scoring benchmark: score.py and churn.batch.spark against the naive ways, on a CSV made from the dataset.

python -m bench.batch [--rows 1000000] [--rounds 3] [--quick] [--no-spark] [--out FILE]

One machine: `score.py INPUT --output OUTPUT` against the way a data scientist writes it (pandas read_csv, the
training cleaning, dv.transform of to_dict records, predict_proba, to_csv), each a fresh process, timed whole
(start-up included), with its peak memory (VmHWM). Spark local[2], in one session: score_frame against a pandas UDF
that unpickles (dv, model) once per task and calls dv.transform + predict_proba on each batch, and against an
identity mapInArrow of the same columns (the floor Spark's Python workers set); each written to Spark's noop sink.
Rounds are interleaved and the table reports medians. Only the ratios carry over to another machine.
Exit 0 whatever the figures; 1 if a way answers differently from scikit-learn.
"""

import argparse
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from bench.run import machine
from churn.model.data import find_data
from churn.model.training import FEATURE_NAMES

ROOT = Path(__file__).resolve().parent.parent
MODEL_FILE = ROOT / "model_C=1.0.bin"
TOLERANCE = 1e-12

# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec, so a child would report this driver's.
PEAK = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    print("VmHWM", status["VmHWM"].split()[0], file=sys.stderr)
"""

# The way a data scientist scores a file with the course's pickle.
NAIVE = """
import pickle, sys
import pandas as pd
from churn.model.data import clean_frame
from churn.model.training import FEATURE_NAMES
with open(sys.argv[1], "rb") as f:
    dv, model = pickle.load(f)
df = clean_frame(pd.read_csv(sys.argv[2]))
X = dv.transform(df[FEATURE_NAMES].to_dict(orient="records"))
df["churn_probability"] = model.predict_proba(X)[:, 1]
df["churn"] = df["churn_probability"] >= 0.5
df[["customerid", "churn_probability", "churn"]].to_csv(sys.argv[3], index=False)
"""


class BenchError(Exception):
    """A way answered differently from scikit-learn: its figures would mean nothing."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the CSV (default 1,000,000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--quick", action="store_true", help="200,000 rows, 1 round (a smoke run, noisier)")
    parser.add_argument("--no-spark", action="store_true", help="only the one-machine comparison")
    parser.add_argument("--out", type=Path, help="also write the Markdown table to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.rounds = 200_000, 1
    return args


def make_csv(path: Path, rows: int) -> None:
    """The dataset's rows repeated to rows, as the dataset spells them."""
    source = find_data()
    if source is None:
        raise SystemExit("error: the dataset is not in $CHURN_DATA, ../shared/data or data/: run `make train` first")
    table = pacsv.read_csv(source, convert_options=pacsv.ConvertOptions(column_types={"TotalCharges": pa.string()}))
    pacsv.write_csv(pa.concat_tables([table] * -(-rows // table.num_rows)).slice(0, rows), path)


def reference(path: Path, n: int = 10_000) -> np.ndarray:
    """scikit-learn's probabilities for the first n rows."""
    from churn.model.data import clean_frame
    from churn.model.training import load_model

    dv, model = load_model(MODEL_FILE)
    df = clean_frame(pd.read_csv(path, nrows=n))
    return model.predict_proba(dv.transform(df[FEATURE_NAMES].to_dict(orient="records")))[:, 1]


def run_process(command: list, expected: np.ndarray, output: Path) -> tuple[float, float]:
    """Seconds and peak MiB of a fresh process, after checking the first rows of what it wrote."""
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", PEAK, *map(str, command)], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode:
        raise BenchError(f"{command[0]} failed:\n{run.stderr[-2000:]}")
    peak = int(run.stderr.rsplit("VmHWM", 1)[1].split()[0]) / 1024
    got = pd.read_csv(output, nrows=len(expected))["churn_probability"].to_numpy()
    if np.abs(got - expected).max() > TOLERANCE:
        raise BenchError(f"{command[0]} does not answer what scikit-learn does")
    return seconds, peak


def bench_local(csv: Path, folder: Path, rounds: int, expected: np.ndarray) -> dict:
    naive_script = folder / "naive.py"
    naive_script.write_text(NAIVE)
    ways = {
        "naive": [naive_script, MODEL_FILE, csv, folder / "naive.csv"],
        "score.py": ["score.py", csv, "--output", folder / "scored.csv"],
    }
    outputs = {"naive": folder / "naive.csv", "score.py": folder / "scored.csv"}
    runs = {way: [] for way in ways}
    for _ in range(rounds):
        for way, command in ways.items():
            runs[way].append(run_process(command, expected, outputs[way]))
    return {way: (statistics.median(s for s, _ in r), max(p for _, p in r)) for way, r in runs.items()}


def bench_spark(csv: Path, rounds: int) -> dict:
    from churn.batch.spark import read_frame, session, ship_package

    spark = session("local[2]")
    spark.conf.set("spark.sql.shuffle.partitions", "2")
    ship_package(spark)
    try:
        check_spark_ways(spark)
        ways = spark_ways(spark, read_frame(spark, csv))
        times = {way: [] for way in ways}
        for _ in range(rounds):
            for way, frame in ways.items():
                start = time.perf_counter()
                frame.write.format("noop").mode("overwrite").save()
                times[way].append(time.perf_counter() - start)
        return {way: statistics.median(t) for way, t in times.items()}
    finally:
        spark.stop()


def spark_ways(spark, df) -> dict:
    from churn.batch.spark import score_frame

    return {
        "naive UDF": naive_udf_frame(spark, df, unpickle_per_batch=True),
        "naive iterator UDF": naive_udf_frame(spark, df, unpickle_per_batch=False),
        "score_frame": score_frame(df, MODEL_FILE, keep=["customerID"])[0],
        "identity": identity_frame(df),
    }


def check_spark_ways(spark) -> None:
    """Both scoring ways answer what scikit-learn does, on the dataset itself (whose ids are unique)."""
    from churn.batch.spark import read_frame
    from churn.model.data import load_data
    from churn.model.training import load_model, predict

    path = find_data()
    dv, model = load_model(MODEL_FILE)
    expected = dict(zip(pd.read_csv(path)["customerID"], predict(load_data(path), dv, model), strict=True))
    ways = spark_ways(spark, read_frame(spark, path))
    for way in ("naive UDF", "naive iterator UDF", "score_frame"):
        got = dict(ways[way].select("customerID", "churn_probability").collect())
        if got.keys() != expected.keys() or max(abs(got[k] - expected[k]) for k in got) > TOLERANCE:
            raise BenchError(f"Spark's {way} does not answer what scikit-learn does")


def naive_udf_frame(spark, df, unpickle_per_batch: bool):
    """The naive Spark way: a pandas UDF over the dataset's columns that unpickles (dv, model), on each batch or once
    per task (an iterator UDF), and runs the training cleaning, dv.transform and predict_proba on each batch."""
    from collections.abc import Iterator

    from pyspark.sql.functions import pandas_udf

    from churn.model.schema import FEATURES

    pickled = spark.sparkContext.broadcast(MODEL_FILE.read_bytes())
    columns = [f.column for f in FEATURES]

    def probabilities(dv, model, series) -> pd.Series:
        from churn.model.data import clean_frame

        frame = pd.concat(series, axis=1, keys=columns)
        for number in ("SeniorCitizen", "tenure", "MonthlyCharges"):  # Spark read the CSV as text
            frame[number] = pd.to_numeric(frame[number])
        frame = clean_frame(frame)
        return pd.Series(model.predict_proba(dv.transform(frame[FEATURE_NAMES].to_dict(orient="records")))[:, 1])

    if unpickle_per_batch:

        @pandas_udf("double")
        def churn_probability(*series: pd.Series) -> pd.Series:
            return probabilities(*pickle.loads(pickled.value), series)

    else:

        @pandas_udf("double")
        def churn_probability(batches: Iterator[tuple[pd.Series, ...]]) -> Iterator[pd.Series]:
            dv, model = pickle.loads(pickled.value)
            for series in batches:
                yield probabilities(dv, model, series)

    return df.select("customerID", churn_probability(*columns).alias("churn_probability"))


def identity_frame(df):
    """The same columns score_frame reads, passed through mapInArrow unchanged: what moving them costs."""
    from churn.batch.chunks import ColumnPlan

    source = df.select(*ColumnPlan.of(df.columns).columns)

    def identity(batches):
        yield from batches

    return source.mapInArrow(identity, source.schema)


def rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f}"


def report(rows: int, rounds: int, local: dict, spark: dict | None, argv: list) -> str:
    info = machine()
    lines = [
        f"`python -m bench.batch{''.join(' ' + arg for arg in argv)}`",
        f"({rows:,} rows, median of {rounds} interleaved round(s); {info['cores']} cores, {info['cpu']}, "
        f"Python {info['python']}, load average {info['load']} at the end, {info['date']})",
        "",
        "| way | rows/s | peak memory | ratio |",
        "|---|---|---|---|",
    ]
    naive_s, naive_mb = local["naive"]
    ours_s, ours_mb = local["score.py"]
    lines.append(
        f"| naive: pandas + `dv.transform` + `predict_proba`, one process | {rate(rows, naive_s)} | "
        f"{naive_mb:,.0f} MiB | 1× |"
    )
    lines.append(
        f"| `score.py` (local engine), one process | {rate(rows, ours_s)} | {ours_mb:,.0f} MiB | "
        f"**{naive_s / ours_s:.1f}×** naive (target ≥ 10×) |"
    )
    if spark:
        udf, ours, identity = spark["naive UDF"], spark["score_frame"], spark["identity"]
        per_task = spark["naive iterator UDF"]
        lines += [
            f"| Spark `local[2]`: naive pandas UDF, unpickling (dv, model) per batch | {rate(rows, udf)} | | 1× |",
            f"| Spark `local[2]`: naive iterator pandas UDF, unpickling once per task | {rate(rows, per_task)} | | "
            f"{udf / per_task:.1f}× the naive UDF |",
            f"| Spark `local[2]`: identity `mapInArrow` of the same columns | {rate(rows, identity)} | | "
            f"{udf / identity:.1f}× the naive UDF |",
            f"| Spark `local[2]`: `churn.batch.spark.score_frame` (`mapInArrow`) | {rate(rows, ours)} | | "
            f"**{udf / ours:.1f}×** the naive UDF (target ≥ 5×), **{identity / ours:.2f}×** identity (≥ 0.8×) |",
        ]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        folder = Path(tmp)
        csv = folder / "customers.csv"
        print(f"writing {args.rows:,} rows to {csv}", file=sys.stderr)
        make_csv(csv, args.rows)
        expected = reference(csv)
        try:
            print("one machine: naive against score.py", file=sys.stderr)
            local = bench_local(csv, folder, args.rounds, expected)
            spark = None
            if not args.no_spark:
                print("Spark local[2]: naive UDFs, score_frame, identity", file=sys.stderr)
                spark = bench_spark(csv, args.rounds)
        except BenchError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    table = report(args.rows, args.rounds, local, spark, argv)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    sys.exit(main())
