"""Score customers in a Spark job with the chunk scorer of score.py's local engine, over Arrow batches.

    from churn.batch.spark import score_frame

    scored, rejected = score_frame(df, "model_C=1.0.bin")

df has the dataset's columns, in any spelling the API accepts (other columns are kept and passed through).
scored is df's rows that could be scored, with churn_probability and churn (probability >= threshold) added;
rejected has each refused row once per problem, with field, value, message and allowed added: the same rules and
messages as the API and score.py. Both come from one mapInArrow pass (mark_frame); persist it when writing both
(score.py does). The model file is read once, on the driver, with the service's safe loader; its folded weights are
broadcast, and each task builds one churn.batch.chunks.ChunkScorer and runs it on every Arrow batch, never per row.

The executors need this package (score_frame adds it to the SparkContext with addPyFile) and numpy, pyarrow and
pydantic. score.py --engine spark runs it on local Spark, or on a cluster under spark-submit (see the README):
score_path checks the file names before Spark starts, numbers the rows as the local engine does, and writes CSV with
the local engine's neutralised text cells (docs/batch.md).
"""

import atexit
import itertools
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from churn.batch.chunks import (
    DECISION,
    FORMULA_START,
    NUMBER_TEXT,
    PROBABILITY,
    REASON,
    REJECT_COLUMNS,
    ROW,
    ChunkScorer,
    ColumnPlan,
    Dialect,
    InputError,
    Summary,
    check_paths,
    check_types,
    file_format,
    location,
    rejects_path,
    sniff_csv,
)
from churn.model.scoring import ServedModel, load_served_model
from churn.monitor.drift import Reference

PACKAGE = Path(__file__).resolve().parent.parent
FIRST_PROBLEM = "_first_problem_of_row"  # mark_frame's own column: counts rejected rows; split_frame drops it
# mark_frame's own columns with a reference: a line per bin and Arrow batch, its customers (churn.monitor.drift).
DRIFT_COLUMNS = ("_drift_feature", "_drift_bin", "_drift_customers")
MALFORMED = "_malformed_line"  # read_frame's: the line of a CSV row that has more or fewer fields than the header
_shipped_to = set()  # the applications this package was added to
LOG_FILE = Path(tempfile.gettempdir()) / f"churn-spark-{os.getpid()}.log"  # the JVM's own output unless verbose


def session(master: str | None = "local[*]", app_name: str = "churn-score", verbose: bool = False):
    """The SparkSession score.py runs in: master as given, or None for the one spark-submit sets.

    In local mode the Python workers run this interpreter (PYSPARK_PYTHON, unless set), the driver listens on the
    loopback address only, and the web UI is off. CSV rows are split whole, so that read_frame finds the malformed
    ones. Unless verbose, Spark's log says errors only, a JVM started here writes its output (start-up warnings) to
    LOG_FILE, and there is no progress bar: the summary stays readable.
    """
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway
    from pyspark.sql import SparkSession

    conf = SparkConf().setAppName(app_name)
    if master:
        conf.setMaster(master)
    if master and master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        conf.set("spark.driver.host", "127.0.0.1").set("spark.driver.bindAddress", "127.0.0.1")
        conf.set("spark.ui.enabled", "false").set("spark.sql.shuffle.partitions", "4")
    if not verbose:
        conf.set("spark.ui.showConsoleProgress", "false")
    # A CSV reader that splits only the columns a query needs cannot tell a row's fields are too many or too few.
    conf.set("spark.sql.csv.parser.columnPruning.enabled", "false")
    if master and not verbose and SparkContext._gateway is None:  # the JVM starts here: its stderr can be chosen
        with open(LOG_FILE, "ab") as log:
            SparkContext(conf=conf, gateway=launch_gateway(conf, popen_kwargs={"stderr": log}))
    spark = SparkSession.builder.config(conf=conf).getOrCreate()
    spark.sparkContext.setLogLevel("WARN" if verbose else "ERROR")
    return spark


def ship_package(spark) -> None:
    """Make churn importable on the executors: a zip of its modules added to the SparkContext, once per application."""
    context = spark.sparkContext
    if context.applicationId in _shipped_to:
        return
    archive = Path(tempfile.mkdtemp(prefix="churn-spark-")) / "churn.zip"
    # Spark serves the file from here while the application runs; this process's exit ends both.
    atexit.register(shutil.rmtree, archive.parent, ignore_errors=True)
    with zipfile.ZipFile(archive, "w") as zipped:
        for module in sorted(PACKAGE.rglob("*.py")):
            zipped.write(module, module.relative_to(PACKAGE.parent))
    context.addPyFile(str(archive))
    _shipped_to.add(context.applicationId)


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def mark_frame(
    df,
    model,
    threshold: float = 0.5,
    id_column: str | None = None,
    keep=None,
    reasons: int = 0,
    decimal: str = ".",
    reference: Reference | None = None,
):
    """One DataFrame of both results: a line per scored row (churn_probability set) and a line per problem of a
    refused row (field set); split_frame separates them. With a reference, also a line per bin of each Arrow batch
    with its scored rows (DRIFT_COLUMNS), which drift_counts sums. Other arguments as score_frame's."""
    from pyspark.sql.pandas.types import to_arrow_schema

    plan = ColumnPlan.of(df.columns, id_column)  # a missing column fails here, before any job runs
    # Spark's names are case-insensitive: the dataset's label Churn and the decision churn would be one name.
    outputs = {PROBABILITY, DECISION, *REJECT_COLUMNS, FIRST_PROBLEM, *(REASON.format(i + 1) for i in range(reasons))}
    outputs = {name.lower() for name in outputs}
    if keep is None:
        keep = [c for c in df.columns if c.lower() not in outputs]
    elif clashes := [c for c in keep if c.lower() in outputs]:
        raise InputError(f"cannot keep {', '.join(clashes)}: the results have columns of that name")
    served = model if isinstance(model, ServedModel) else load_served_model(model)
    if reasons:
        from churn.model.explain import make_explainer

        make_explainer(served)  # here, so that a model without explanation statistics fails before any job
    spark = df.sparkSession
    ship_package(spark)
    # The folded weights and the explanation statistics: plain data (an Explainer's phrases are functions).
    shared = spark.sparkContext.broadcast((served.scorer, served.explanation if reasons else None, reference))

    source = df.select(*map(_quoted, dict.fromkeys(keep + plan.columns)))
    schema = _marked_schema(source, keep, reasons, nullable_kept=reference is not None)
    arrow_schema = to_arrow_schema(schema)

    def score_partition(batches):
        scorer, stats, drift_reference = shared.value
        explainer = None
        if reasons:
            from churn.model.explain import Explainer

            explainer = Explainer(scorer, stats)
        chunk_scorer = ChunkScorer(scorer, plan, threshold, keep, explainer, reasons, decimal, drift_reference)
        for batch in batches:
            result = chunk_scorer.score(batch)
            if result.counts is not None:
                yield _padded(_count_lines(drift_reference, result.counts), arrow_schema)
            if result.scored.num_rows:
                yield _padded(result.scored, arrow_schema)
            if result.rejects.num_rows:
                rows = result.reject_rows  # a row's problems are consecutive
                first = pa.array(np.concatenate(([True], rows[1:] != rows[:-1])))
                yield _padded(result.rejects.append_column(FIRST_PROBLEM, first), arrow_schema)

    return source.mapInArrow(score_partition, schema)


def _marked_schema(source, keep: list[str], reasons: int, nullable_kept: bool):
    """mark_frame's columns: the kept ones, the answer, the reasons, the problem, and the drift count lines'."""
    from pyspark.sql.types import BooleanType, DoubleType, LongType, StringType, StructField, StructType

    kept = [source.schema[name] for name in keep]
    if nullable_kept:  # the count lines have none of them (the row number is otherwise never null)
        kept = [StructField(field.name, field.dataType, True) for field in kept]
    text = [StructField(REASON.format(i + 1), StringType()) for i in range(reasons)]
    problem = [StructField(name, StringType()) for name in REJECT_COLUMNS]
    drift_types = (StringType(), StringType(), LongType())
    return StructType(
        [*kept, StructField(PROBABILITY, DoubleType()), StructField(DECISION, BooleanType()), *text, *problem]
        + [StructField(FIRST_PROBLEM, BooleanType())]
        + [StructField(name, kind) for name, kind in zip(DRIFT_COLUMNS, drift_types, strict=True)]
    )


def _count_lines(reference: Reference, counts: dict) -> pa.RecordBatch:
    """One Arrow batch's counts as DRIFT_COLUMNS lines, one per bin."""
    names, bins, customers = [], [], []
    for name, per_bin in counts.items():
        names += [name] * len(per_bin)
        bins += reference.bins(name)
        customers += per_bin.tolist()
    arrays = [pa.array(names, pa.string()), pa.array(bins, pa.string()), pa.array(customers, pa.int64())]
    return pa.RecordBatch.from_arrays(arrays, names=list(DRIFT_COLUMNS))


def drift_counts(marked, reference: Reference) -> dict:
    """mark_frame's count lines summed by Spark: the scored rows per bin of each feature, as counts_of gives them."""
    from pyspark.sql import functions as F

    feature, bin_, customers = DRIFT_COLUMNS
    sums = marked.where(F.col(customers).isNotNull()).groupBy(feature, bin_).agg(F.sum(customers).alias("n"))
    found = {(row[feature], row[bin_]): row["n"] for row in sums.collect()}
    return {
        name: np.array([found.get((name, b), 0) for b in reference.bins(name)], np.int64) for name in reference.shares
    }


def _padded(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """batch's columns in schema's order, nulls where it has none."""
    n = batch.num_rows
    arrays = [
        batch.column(field.name) if field.name in batch.schema.names else pa.nulls(n, field.type) for field in schema
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def split_frame(marked):
    """(scored, rejected) from mark_frame's DataFrame."""
    from pyspark.sql import functions as F

    names = marked.columns
    keep = names[: names.index(PROBABILITY)]
    scored_columns = names[: names.index(REJECT_COLUMNS[0])]
    scored = marked.where(F.col(PROBABILITY).isNotNull()).select(*map(_quoted, scored_columns))
    rejected = marked.where(F.col(REJECT_COLUMNS[0]).isNotNull()).select(*map(_quoted, keep + list(REJECT_COLUMNS)))
    return scored, rejected


def score_frame(
    df, model, threshold: float = 0.5, id_column: str | None = None, keep=None, reasons: int = 0, decimal: str = "."
):
    """(scored, rejected): df's customers scored with the model, and its refused rows with their reasons.

    df: a DataFrame with the dataset's columns in any accepted spelling; a missing one raises
    churn.batch.chunks.InputError.
    model: a model file's path, or a churn.model.scoring.ServedModel. threshold: churn is churn_probability >= it.
    id_column: the customers' id (default customerID in any spelling). keep: the columns of df carried into both
    results (default all but those named like a result column, such as the dataset's label Churn: Spark's names
    are case-insensitive). reasons: add reason_1..reason_N, the top N reasons (needs the model's .json).
    decimal: "," to read text numbers written with a decimal comma (29,85).
    """
    return split_frame(mark_frame(df, model, threshold, id_column, keep, reasons, decimal))


def read_frame(spark, path, dialect: Dialect | None = None, malformed: bool = False):
    """A CSV (every column as text, as the local engine reads it, separated as dialect says) or a Parquet file or
    folder, as a DataFrame. With malformed, a CSV's frame has MALFORMED too: the line of a row with more or fewer
    fields than the header (Spark's corrupt record), else null; Spark finds them only with
    spark.sql.csv.parser.columnPruning.enabled false, as session sets it."""
    from pyspark.sql.types import StringType, StructField, StructType

    if file_format(path) == "parquet":
        return spark.read.parquet(str(path))
    options = {"header": True, "escape": '"', "sep": dialect.separator if dialect else ","}
    if not malformed:
        # Spark reads an empty field as null where the local engine, like pandas and the API, sees blank text.
        return spark.read.csv(str(path), **options).na.fill("")
    names = spark.read.csv(str(path), **options).columns
    schema = StructType([StructField(name, StringType()) for name in [*names, MALFORMED]])
    df = spark.read.csv(str(path), schema=schema, columnNameOfCorruptRecord=MALFORMED, **options)
    return df.na.fill("", subset=names)  # blank text, as above; MALFORMED stays null for a whole row


def malformed_rejects(df, separator: str, id_column: str | None):
    """The rejects of read_frame's malformed rows, as the local engine words them: ROW, the id, field (null), value
    (the line), message and allowed. df: read_frame's, numbered."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    from churn.batch.chunks import count_fields, ragged_problem

    expected = len(df.columns) - 2  # not MALFORMED or ROW
    keep = [ROW, *([id_column] if id_column else [])]
    # Spark refuses a query of a file's corrupt-record column alone (the ROW is not the file's): one more column.
    other = next(name for name in df.columns if name not in (MALFORMED, ROW))
    source = df.where(F.col(MALFORMED).isNotNull()).select(
        *map(_quoted, dict.fromkeys([*keep, other])), F.col(MALFORMED).alias("value")
    )
    problem = [StructField(name, StringType()) for name in REJECT_COLUMNS]
    schema = StructType([*(source.schema[name] for name in keep), *problem])

    def describe(batches):
        for batch in batches:
            lines = batch.column("value").to_pylist()
            problems = [
                ragged_problem(n, count_fields(line, separator), expected, separator)
                for n, line in zip(batch.column(ROW).to_pylist(), lines, strict=True)
            ]
            columns = [batch.column(name) for name in keep] + [
                pa.nulls(batch.num_rows, pa.string()),
                batch.column("value"),
            ]
            columns += [
                pa.array([p[0] for p in problems], pa.string()),
                pa.array([p[1] for p in problems], pa.string()),
            ]
            yield pa.RecordBatch.from_arrays(columns, names=schema.names)

    ship_package(df.sparkSession)
    return source.mapInArrow(describe, schema)


def numbered(df):
    """df with ROW: each row's number as Spark reads the input, 1 for the first (for one file, the row after the
    header, as the local engine numbers it). One job counts each partition's rows; no shuffle."""
    from pyspark.sql import functions as F

    partition, position = F.spark_partition_id(), F.monotonically_increasing_id()
    counts = dict(df.select(partition.alias("p")).groupBy("p").count().collect())
    starts = list(itertools.accumulate((counts.get(p, 0) for p in range(max(counts, default=0) + 1)), initial=1))
    # monotonically_increasing_id is the partition's number << 33 plus the row's place in the partition.
    within = position - F.shiftleft(partition.cast("long"), 33)
    return df.withColumn(ROW, F.array(*map(F.lit, starts))[partition] + within)


def neutralised_frame(df, number_fields=()):
    """churn.batch.chunks.neutralised for a DataFrame written as CSV: a text cell a spreadsheet would run as a
    formula gets a leading ', but not a rejects value written as a number in one of number_fields."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType

    exempt = F.lit(False)
    if number_fields:
        exempt = F.coalesce(F.col("field").isin(list(number_fields)) & F.col("value").rlike(NUMBER_TEXT), exempt)
    columns = []
    for field in df.schema.fields:
        column = F.col(_quoted(field.name))
        if isinstance(field.dataType, StringType):
            risky = column.rlike(FORMULA_START) & ~exempt if field.name == "value" else column.rlike(FORMULA_START)
            column = F.when(risky, F.concat(F.lit("'"), column)).otherwise(column)
        columns.append(column.alias(field.name))
    return df.select(*columns)


def write_frame(df, path, number_fields=()) -> None:
    """df as a folder of CSV (with a header, text neutralised) or Parquet part files, by path's name, replacing what
    was there."""
    if file_format(path) == "parquet":
        df.write.mode("overwrite").parquet(str(path))
    else:
        writer = neutralised_frame(df, number_fields).write.mode("overwrite")
        writer.option("header", True).option("escape", '"').csv(str(path))


def score_path(
    input_path,
    output,
    model,
    threshold: float = 0.5,
    id_column: str | None = None,
    reasons: int = 0,
    master: str | None = "local[*]",
    separator: str | None = None,
    decimal: str | None = None,
    verbose: bool = False,
    reference: Reference | None = None,
) -> Summary:
    """score.py --engine spark: input to output and its rejects, as folders of part files, with the run's counts
    (and with a reference, the scored rows per bin: Summary.counts).
    The file names are checked (churn.batch.chunks.check_paths) and a local CSV's separator found before Spark
    starts."""
    import time
    import warnings

    from pyspark.sql.pandas.types import to_arrow_schema

    start = time.perf_counter()
    check_paths(input_path, output, folders=True)
    dialect = _dialect(input_path, separator, decimal)
    # pyspark warns that it does not fully support pandas 3 whenever mapInArrow starts: it does not use pandas there.
    warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)
    spark = session(master, verbose=verbose)
    df = read_frame(spark, input_path, dialect, malformed=True)
    plan = ColumnPlan.of([name for name in df.columns if name != MALFORMED], id_column)
    check_types(to_arrow_schema(df.select(*map(_quoted, plan.columns)).schema), plan, input_path)
    summary = _write_results(numbered(df), model, threshold, plan, reasons, dialect, location(output), reference)
    summary.seconds = time.perf_counter() - start
    return summary


def _dialect(input_path, separator: str | None, decimal: str | None) -> Dialect | None:
    """A CSV's separator and decimal mark: as given, else found in a local file (churn.batch.chunks.sniff_csv)."""
    if file_format(input_path) != "csv":
        return None
    input_path = location(input_path)
    if isinstance(input_path, Path) and input_path.is_file():
        return sniff_csv(input_path, separator, decimal)
    return Dialect(separator or ",", decimal or ".")


def _write_results(
    df, model, threshold, plan: ColumnPlan, reasons: int, dialect: Dialect | None, output: Path | str, reference=None
):
    """Score read_frame's numbered df into output and its rejects (a CSV's malformed rows among them): the counts."""
    from pyspark.sql import functions as F

    malformed = None
    if MALFORMED in df.columns:
        malformed = malformed_rejects(df, dialect.separator, plan.id_column).persist()
        df = df.where(F.col(MALFORMED).isNull()).drop(MALFORMED)
    keep = [ROW, plan.id_column] if plan.id_column else [ROW]
    decimal = dialect.decimal if dialect else "."
    marked = mark_frame(df, model, threshold, plan.id_column, keep, reasons, decimal, reference).persist()
    try:
        scored, rejected = split_frame(marked)
        write_frame(scored.drop(ROW) if plan.id_column else scored, output)  # the local engine's columns
        numbers = [name for feature, names in plan.features if not feature.categorical for name in names]
        rejected = rejected if malformed is None else rejected.unionByName(malformed)
        write_frame(rejected, rejects_path(output), numbers)
        counts = marked.agg(
            F.count(PROBABILITY).alias("scored"), F.count_if(F.col(FIRST_PROBLEM)).alias("rejected")
        ).first()
        skipped = 0 if malformed is None else malformed.count()
        drift = drift_counts(marked, reference) if reference else None
    finally:
        marked.unpersist()
        if malformed is not None:
            malformed.unpersist()
    summary = Summary(scored=counts["scored"], rejected=counts["rejected"] + skipped, output=str(output), counts=drift)
    summary.read = summary.scored + summary.rejected
    summary.rejects = str(rejects_path(output))
    return summary
