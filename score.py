"""Score a file of customers: every row with its churn probability, or rejected with the reason.

python score.py INPUT [--output OUTPUT] [--model model_C=1.0.bin] [--id-column customerID]
                      [--threshold 0.5] [--explain N] [--sep ,|;|tab] [--decimal .|,]
                      [--engine local|spark] [--master URL] [--verbose] [--drift TABLE.csv]

INPUT is CSV or Parquet with the dataset's columns, in any spelling the API accepts (other columns are ignored).
A CSV may be separated by commas, semicolons or tabs (found from its header, or --sep) and write decimal commas
(found in a semicolon- or tab-separated file whose numbers are written so, or --decimal ,). A CSV row with more or
fewer fields than the header is rejected with its line.
OUTPUT (default: beside INPUT, customers.csv -> customers.scored.csv) is CSV or Parquet by its name: the id column
(or the row numbers when there is none), churn_probability, churn, and with --explain N reason_1..reason_N.
Rows the API would refuse are not scored: OUTPUT's rejects file (customers.scored.rejects.csv) lists each problem
with the row, id, field, value, message and what is allowed. Text cells a spreadsheet would run as a formula are
prefixed with ' in both CSV files (docs/batch.md). Neither file may be INPUT: that is refused before anything is read.
--engine spark runs the same scorer on Spark: local[*], or the cluster spark-submit names (OUTPUT is then a folder);
INPUT and OUTPUT may then be URLs Spark reads (s3a://bucket/customers.csv, hdfs://..., file:///...), kept as typed.
Spark's own log goes to a file (named on failure) unless --verbose.
--drift TABLE.csv also compares the scored rows with the training split the model was fitted on: TABLE.csv has a
line per bin of every feature and of the churn probability (feature, psi, level, bin, range, reference_share, share,
customers), the features with the largest PSI first; below 0.1 is stable, 0.1 to 0.25 moderate, above significant
(docs/monitoring.md).
Exit status: 0 every row scored, 1 some rows rejected (the others are scored), 2 nothing scored (bad arguments,
a missing column, an unreadable input or model, an output that cannot be written or would replace INPUT), with
one line saying why.
"""

import argparse
import os
import sys
from pathlib import Path

import pyarrow as pa

from churn.batch.chunks import (
    SEPARATORS,
    InputError,
    Progress,
    check_paths,
    default_output,
    location,
    same_file,
    score_file,
)
from churn.model.explain import MAX_REASONS, ExplanationUnavailable, make_explainer
from churn.model.scoring import ModelLoadError, load_served_model
from churn.monitor.drift import Reference, ReferenceUnavailable, drift_summary, drift_table, write_drift_table

MODEL_FILE = Path(__file__).resolve().parent / "model_C=1.0.bin"
ALL_SCORED, SOME_REJECTED, FAILED = 0, 1, 2


def probability(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a probability from 0 to 1")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=location, help="CSV or Parquet file of customers (with Spark, also a URL)")
    parser.add_argument("--output", type=location, help="CSV or Parquet file (default: INPUT's name + .scored)")
    parser.add_argument("--model", type=Path, default=MODEL_FILE, help=f"model file (default: {MODEL_FILE.name})")
    parser.add_argument("--id-column", help="the customers' id column (default: customerID, in any spelling)")
    parser.add_argument("--threshold", type=probability, default=0.5, help="churn is probability >= it (0.5)")
    parser.add_argument(
        "--explain", type=int, default=0, choices=range(MAX_REASONS + 1), metavar="N", help="add the top N reasons"
    )
    parser.add_argument("--sep", type=separator, help="a CSV's separator: , ; or tab (default: found from its header)")
    parser.add_argument("--decimal", choices=(".", ","), help="a CSV's decimal mark (default: found, else .)")
    parser.add_argument("--engine", choices=("local", "spark"), default="local")
    parser.add_argument(
        "--master", help="Spark master (default: local[*], or the one spark-submit sets); with --engine spark"
    )
    parser.add_argument("--verbose", action="store_true", help="show Spark's own log (--engine spark)")
    parser.add_argument("--drift", type=Path, metavar="TABLE.csv", help="also write the file's drift (PSI) table here")
    return parser.parse_args(argv)


def separator(text: str) -> str:
    """One character; tab also as 'tab' or '\\t', which a shell passes as typed."""
    text = {"tab": "\t", "\\t": "\t"}.get(text.lower(), text)
    if len(text) != 1 or text in '"\r\n':
        raise argparse.ArgumentTypeError(f"{text!r} is not a separator: give one of {', '.join(map(repr, SEPARATORS))}")
    return text


def main(argv=None) -> int:
    args = parse_args(argv)
    output = args.output or default_output(args.input)
    try:
        check_paths(args.input, output, folders=args.engine == "spark")  # before the model, the input or Spark
        reference = drift_reference(args)
        if args.engine == "spark":
            summary = score_on_spark(args, output, reference)
        else:
            compact_memory()
            model = load_served_model(args.model)
            explainer = make_explainer(model) if args.explain else None
            summary = score_file(
                args.input,
                output,
                model,
                args.threshold,
                args.id_column,
                explainer,
                args.explain,
                Progress(),
                args.sep,
                args.decimal,
                reference,
            )
        if reference is not None:
            rows = drift_table(reference, summary.counts)
            write_drift_table(args.drift, rows)
    except (InputError, ModelLoadError, ExplanationUnavailable, ReferenceUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return FAILED
    except OSError as e:
        print(f"error: cannot write the drift table {args.drift}: {e.strerror}", file=sys.stderr)
        return FAILED
    print(summary.line())
    if reference is not None:
        print(f"{drift_summary(rows)}; the table is in {args.drift}")
    return SOME_REJECTED if summary.rejected else ALL_SCORED


def drift_reference(args) -> Reference | None:
    """The model's reference profile when --drift asks for it; ReferenceUnavailable when the model has none."""
    if args.drift is None:
        return None
    if same_file(args.drift, args.input):
        raise InputError(f"--drift {args.drift} is the input: give the table another name")
    model = load_served_model(args.model)
    if model.reference is None:
        raise ReferenceUnavailable(f"{args.model}'s sidecar has no reference profile: retrain it with train.py")
    return Reference.from_json(model.reference)


def score_on_spark(args, output, reference):
    """score_path's summary; an error Spark reports (a path it cannot read, say) as an InputError naming the log."""
    from pyspark.errors import PySparkException  # pyspark is imported only with --engine spark

    from churn.batch.spark import LOG_FILE, score_path

    try:
        summary = score_path(
            args.input,
            output,
            args.model,
            args.threshold,
            args.id_column,
            args.explain,
            spark_master(args),
            separator=args.sep,
            decimal=args.decimal,
            verbose=args.verbose,
            reference=reference,
        )
    except PySparkException as e:
        where = "" if args.verbose else f" (Spark's own log: {LOG_FILE})"
        raise InputError(f"Spark: {str(e).splitlines()[0] if str(e) else type(e).__name__}{where}") from None
    LOG_FILE.unlink(missing_ok=True)  # kept only when it is named, on a failure
    return summary


def compact_memory() -> None:
    """Arrow's jemalloc pool, where it is built in: it gives freed chunks back, so peak memory stays flat however long
    the input (the default mimalloc pool keeps more of them: a few percent more at 5,000,000 rows than at 100,000)."""
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:
        pass


def spark_master(args) -> str | None:
    """--master, else the master spark-submit set (it starts Python with PYSPARK_GATEWAY_PORT), else local[*]."""
    if args.master:
        return args.master
    return None if "PYSPARK_GATEWAY_PORT" in os.environ else "local[*]"


if __name__ == "__main__":
    sys.exit(main())
