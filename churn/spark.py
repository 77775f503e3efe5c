"""Score customers in a Spark job with the chunk scorer of score.py's local engine, over Arrow batches.

    from churn.spark import score_frame

    scored, rejected = score_frame(df, "model_C=1.0.bin")

df has the dataset's columns, in any spelling the API accepts (other columns are kept and passed through).
scored is df's rows that could be scored, with churn_probability and churn (probability >= threshold) added;
rejected has each refused row once per problem, with field, value, message and allowed added: the same rules and
messages as the API and score.py. Both come from one mapInArrow pass (mark_frame); persist it when writing both
(score.py does). The model file is read once, on the driver, with the service's safe loader; its folded weights are
broadcast, and each task builds one churn.batch.ChunkScorer and runs it on every Arrow batch, never per row.

The executors need this package (score_frame adds it to the SparkContext with addPyFile) and numpy, pyarrow and
pydantic. score.py --engine spark runs it on local Spark, or on a cluster under spark-submit (see the README).
"""

import os
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from churn.batch import (
    DECISION,
    PROBABILITY,
    REASON,
    REJECT_COLUMNS,
    ChunkScorer,
    ColumnPlan,
    InputError,
    Summary,
    file_format,
    rejects_path,
)
from churn.scoring import ServedModel, load_served_model

PACKAGE = Path(__file__).resolve().parent
FIRST_PROBLEM = "_first_problem_of_row"  # mark_frame's own column: counts rejected rows; split_frame drops it
_shipped_to = set()  # the applications this package was added to


def session(master: str | None = "local[*]", app_name: str = "churn-score"):
    """The SparkSession score.py runs in: master as given, or None for the one spark-submit sets.

    In local mode the Python workers run this interpreter (PYSPARK_PYTHON, unless set), the driver listens on the
    loopback address only, and the web UI is off.
    """
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    if master and master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = (
            builder.config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "4")
        )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def ship_package(spark) -> None:
    """Make churn importable on the executors: a zip of its modules added to the SparkContext, once per application."""
    context = spark.sparkContext
    if context.applicationId in _shipped_to:
        return
    archive = Path(tempfile.mkdtemp(prefix="churn-spark-")) / "churn.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for module in sorted(PACKAGE.rglob("*.py")):
            zipped.write(module, module.relative_to(PACKAGE.parent))
    context.addPyFile(str(archive))
    _shipped_to.add(context.applicationId)


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def mark_frame(df, model, threshold: float = 0.5, id_column: str | None = None, keep=None, reasons: int = 0):
    """One DataFrame of both results: a line per scored row (churn_probability set) and a line per problem of a
    refused row (field set); split_frame separates them. Arguments as score_frame's."""
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.sql.types import BooleanType, DoubleType, StringType, StructField, StructType

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
        from churn.explain import make_explainer

        make_explainer(served)  # here, so that a model without explanation statistics fails before any job
    spark = df.sparkSession
    ship_package(spark)
    # The folded weights and the explanation statistics: plain data (an Explainer's phrases are functions).
    shared = spark.sparkContext.broadcast((served.scorer, served.explanation if reasons else None))

    source = df.select(*map(_quoted, dict.fromkeys(keep + plan.columns)))
    kept = [source.schema[name] for name in keep]
    text = [StructField(REASON.format(i + 1), StringType()) for i in range(reasons)]
    problem = [StructField(name, StringType()) for name in REJECT_COLUMNS]
    schema = StructType(
        [*kept, StructField(PROBABILITY, DoubleType()), StructField(DECISION, BooleanType()), *text, *problem]
        + [StructField(FIRST_PROBLEM, BooleanType())]
    )
    arrow_schema = to_arrow_schema(schema)

    def score_partition(batches):
        scorer, stats = shared.value
        explainer = None
        if reasons:
            from churn.explain import Explainer

            explainer = Explainer(scorer, stats)
        chunk_scorer = ChunkScorer(scorer, plan, threshold, keep, explainer, reasons)
        for batch in batches:
            result = chunk_scorer.score(batch)
            if result.scored.num_rows:
                yield _padded(result.scored, arrow_schema)
            if result.rejects.num_rows:
                rows = result.reject_rows  # a row's problems are consecutive
                first = pa.array(np.concatenate(([True], rows[1:] != rows[:-1])))
                yield _padded(result.rejects.append_column(FIRST_PROBLEM, first), arrow_schema)

    return source.mapInArrow(score_partition, schema)


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


def score_frame(df, model, threshold: float = 0.5, id_column: str | None = None, keep=None, reasons: int = 0):
    """(scored, rejected): df's customers scored with the model, and its refused rows with their reasons.

    df: a DataFrame with the dataset's columns in any accepted spelling; a missing one raises churn.batch.InputError.
    model: a model file's path, or a churn.scoring.ServedModel. threshold: churn is churn_probability >= it.
    id_column: the customers' id (default customerID in any spelling). keep: the columns of df carried into both
    results (default all but those named like a result column, such as the dataset's label Churn: Spark's names
    are case-insensitive). reasons: add reason_1..reason_N, the top N reasons (needs the model's .json).
    """
    return split_frame(mark_frame(df, model, threshold, id_column, keep, reasons))


def read_frame(spark, path):
    """A CSV (every column as text, as the local engine reads it) or a Parquet file or folder, as a DataFrame."""
    if file_format(path) == "parquet":
        return spark.read.parquet(str(path))
    # Spark reads an empty field as null where the local engine, like pandas and the API, sees blank text.
    return spark.read.csv(str(path), header=True, escape='"').na.fill("")


def write_frame(df, path) -> None:
    """df as a folder of CSV (with a header) or Parquet part files, by path's name, replacing what was there."""
    writer = df.write.mode("overwrite")
    if file_format(path) == "parquet":
        writer.parquet(str(path))
    else:
        writer.option("header", True).option("escape", '"').csv(str(path))


def score_path(
    input_path,
    output,
    model,
    threshold: float = 0.5,
    id_column: str | None = None,
    reasons: int = 0,
    master: str | None = "local[*]",
) -> Summary:
    """score.py --engine spark: input to output and its rejects, as folders of part files, with the run's counts."""
    import time
    import warnings

    from pyspark.sql import functions as F

    # pyspark warns that it does not fully support pandas 3 whenever mapInArrow starts: it does not use pandas there.
    warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)
    start = time.perf_counter()
    spark = session(master)
    df = read_frame(spark, input_path)
    plan = ColumnPlan.of(df.columns, id_column)
    keep = [plan.id_column] if plan.id_column else df.columns  # without ids, the rows' own columns say which is which
    marked = mark_frame(df, model, threshold, plan.id_column, keep, reasons).persist()
    try:
        scored, rejected = split_frame(marked)
        write_frame(scored, output)
        write_frame(rejected, rejects_path(Path(output)))
        counts = marked.agg(
            F.count(PROBABILITY).alias("scored"), F.count_if(F.col(FIRST_PROBLEM)).alias("rejected")
        ).first()
    finally:
        marked.unpersist()
    summary = Summary(scored=counts["scored"], rejected=counts["rejected"], output=str(output))
    summary.read = summary.scored + summary.rejected
    summary.rejects = str(rejects_path(Path(output)))
    summary.seconds = time.perf_counter() - start
    return summary
