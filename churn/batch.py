"""Score a customer base in chunks: the chunk scorer that score.py's local engine and churn.spark both run.

A chunk is an Arrow record batch. Each column is dictionary-encoded and each distinct value goes through the schema's
one rule, Feature.clean, once (remembered across chunks), so a million rows cost a few thousand clean() calls; the
folded model then scores whole columns (LinearScorer.score_columns). A value clean() refuses, or two spellings of one
field that disagree, reject the row: the rejects list the row, its id, the field, the value, the message and what is
allowed, and every other row is scored. The local engine streams a CSV or Parquet file through it a chunk at a time,
so its memory does not grow with the file.
"""

import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from churn.data import clean_text
from churn.schema import FEATURES, ID_COLUMN, Feature, InvalidValue, conflict, feature_for
from churn.scoring import LinearScorer

PROBABILITY = "churn_probability"
DECISION = "churn"
ROW = "row"  # a row's number in the input: 1 for the first row after the header
REJECT_COLUMNS = ("field", "value", "message", "allowed")
REASON = "reason_{}"  # reason_1 ... reason_N with --explain N
MEMO_LIMIT = 100_000  # distinct values remembered per column; past that the memory is cleared, not grown
CHUNK_ROWS = 32_768
# Arrow's CSV reader parses a few dozen blocks ahead of its reader: small blocks keep that memory small, and are
# put together into chunks of CHUNK_ROWS for scoring.
CSV_BLOCK_BYTES = 512 << 10
CATEGORY_TEXT = pa.dictionary(pa.int32(), pa.string())
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class InputError(Exception):
    """The input cannot be scored at all (a missing column, an unreadable file); the message says what to fix."""


def allowed_text(feature: Feature) -> str:
    """What a field allows, for the rejects file: its model spellings (any case and spacing), or its range."""
    if feature.categorical:
        return " | ".join(feature.clean_values)
    blank = ", blank is 0" if feature.blank_is_zero else ""
    return f"{feature.kind} from {feature.minimum:g} to {feature.maximum:g}{blank}"


@dataclass(frozen=True)
class ColumnPlan:
    """Which input columns hold each feature (one or more spellings of it) and which holds the customer's id."""

    features: tuple  # (Feature, (column, ...)) in FEATURES order
    id_column: str | None

    @classmethod
    def of(cls, names: Sequence[str], id_column: str | None = None) -> "ColumnPlan":
        """The plan for an input with these column names; InputError when a feature, or a named id column, is missing.

        The id column is id_column in any spelling (customerID when None, and then optional).
        """
        found = {f.name: [] for f in FEATURES}
        for name in names:
            feature = feature_for(name)
            if feature is not None:
                found[feature.name].append(name)
        missing = [f.column for f in FEATURES if not found[f.name]]
        if missing:
            raise InputError(
                f"the input has no column for {', '.join(missing)} (in any spelling the API accepts); "
                f"its columns are {', '.join(names) or 'none'}"
            )
        ids = [name for name in names if clean_text(name) == clean_text(id_column or ID_COLUMN)]
        if id_column and not ids:
            raise InputError(f"the input has no id column {id_column!r}; its columns are {', '.join(names)}")
        return cls(tuple((f, tuple(found[f.name])) for f in FEATURES), ids[0] if ids else None)

    @property
    def columns(self) -> list[str]:
        """The input columns scoring reads."""
        return [self.id_column] * bool(self.id_column) + [c for _, columns in self.features for c in columns]


class _Memo:
    """A column's distinct values seen so far (at most MEMO_LIMIT), each cleaned once by the schema's Feature.clean."""

    def __init__(self, feature: Feature):
        self.feature = feature
        self.placeholder = feature.clean_values[0] if feature.categorical else 0.0  # stands in for a refused value
        self.code_of = {v: i for i, v in enumerate(feature.clean_values)}
        self.forget()

    def forget(self) -> None:
        self.values = None  # the values as the input had them, in the order first seen
        self.text = pa.array([], pa.string())  # the same as text, for the rejects
        self.clean = []  # as the model reads each: a category's model spelling, or a number
        self.messages = []  # why each was refused, or None
        self.refused = np.zeros(0, bool)
        self.comparable = np.zeros(0)  # a number, or a category's index in clean_values: to compare two spellings

    def positions(self, values: pa.Array) -> np.ndarray:
        """Where each of values (distinct) is in the memo, after cleaning those it had not seen."""
        if self.values is not None and (self.values.type != values.type or len(self.values) > MEMO_LIMIT):
            self.forget()
        if self.values is None:
            self._learn(values)
        else:
            unseen = pc.index_in(values, value_set=self.values).is_null()
            if unseen.true_count:
                self._learn(values.filter(unseen))
        return pc.index_in(values, value_set=self.values).to_numpy(zero_copy_only=False)

    def _learn(self, values: pa.Array) -> None:
        clean, messages = [], []
        for value in values.to_pylist():
            try:
                clean.append(self.feature.clean(value))
                messages.append(None)
            except InvalidValue as e:
                clean.append(self.placeholder)
                messages.append(str(e))
        comparable = [self.code_of[v] for v in clean] if self.feature.categorical else clean
        text = values if pa.types.is_string(values.type) else values.cast(pa.string())
        self.values = values if self.values is None else pa.concat_arrays([self.values, values])
        self.text = pa.concat_arrays([self.text, text])
        self.clean += clean
        self.messages += messages
        self.refused = np.append(self.refused, [m is not None for m in messages])
        self.comparable = np.append(self.comparable, np.array(comparable, float))


@dataclass
class _CleanColumn:
    """One input column of a chunk: each row's place in the column's memo."""

    name: str
    position: int  # the column's place in the plan, to order a row's problems as the input orders its fields
    memo: _Memo
    at: np.ndarray

    def __post_init__(self):
        self.refused = self.memo.refused[self.at]


@dataclass
class Scores:
    """A chunk's results. scored: the keep columns of the rows that were scored, churn_probability, churn
    (probability >= threshold) and, with reasons=N, reason_1..reason_N; rejects: the keep columns of each refused
    row once per problem, then field, value, message and allowed. The rows are the chunk's row indices of each."""

    scored: pa.RecordBatch
    rejects: pa.RecordBatch
    scored_rows: np.ndarray
    reject_rows: np.ndarray


class ChunkScorer:
    """Scores Arrow record batches of customers as ColumnPlan maps their columns: the chunk function of both engines."""

    def __init__(
        self,
        scorer: LinearScorer,
        plan: ColumnPlan,
        threshold: float = 0.5,
        keep: Sequence[str] = (),
        explainer=None,
        reasons: int = 0,
    ):
        self.scorer, self.plan, self.threshold, self.keep = scorer, plan, threshold, list(keep)
        self.explainer, self.reasons = explainer, reasons
        if reasons and explainer is None:
            raise ValueError("reasons need an explainer")
        self.memos = {column: _Memo(feature) for feature, columns in plan.features for column in columns}

    def _clean(self, name: str, position: int, array: pa.Array) -> _CleanColumn:
        if not pa.types.is_dictionary(array.type):
            array = pc.dictionary_encode(array)
        values, indices = array.dictionary, array.indices
        if indices.null_count:  # a null is one more distinct value, which clean() refuses as the API does
            values = pa.concat_arrays([values, pa.nulls(1, values.type)])
            indices = indices.fill_null(len(values) - 1)
        memo = self.memos[name]
        return _CleanColumn(name, position, memo, memo.positions(values)[indices.to_numpy(zero_copy_only=False)])

    def score(self, batch: pa.RecordBatch) -> Scores:
        n = batch.num_rows
        refused = np.zeros(n, bool)
        problems = []  # (rows, position, field, values as text, messages, feature)
        features = {}
        position = 0
        for feature, names in self.plan.features:
            first = None
            for name in names:
                column = self._clean(name, position, batch.column(name))
                position += 1
                if column.refused.any():
                    rows = np.flatnonzero(column.refused)
                    at = column.at[rows]
                    messages = np.array(column.memo.messages, object)[at]
                    problems.append((rows, column.position, name, column.memo.text.take(at), messages, feature))
                    refused |= column.refused
                if first is None:
                    first = column
                    continue
                # Two spellings of one field: both must give the model the same value.
                differ = first.memo.comparable[first.at] != column.memo.comparable[column.at]
                differ &= ~(first.refused | column.refused)
                if differ.any():
                    rows = np.flatnonzero(differ)
                    message = conflict(first.name, name)
                    values = column.memo.text.take(column.at[rows])
                    problems.append((rows, column.position, name, values, np.full(len(rows), message), feature))
                    refused |= differ
            if feature.categorical:
                features[feature.name] = (first.at, first.memo.clean)
            else:
                features[feature.name] = first.memo.comparable[first.at]

        probabilities = self.scorer.score_columns(features)
        scored_rows = None
        if refused.any():
            scored_rows = np.flatnonzero(~refused)
            probabilities = probabilities[scored_rows]
        scored = self._scored(batch, features, scored_rows, probabilities)
        rejects, reject_rows = self._rejects(batch, problems)
        return Scores(scored, rejects, np.arange(n) if scored_rows is None else scored_rows, reject_rows)

    def _scored(self, batch, features, rows, probabilities) -> pa.RecordBatch:
        columns = {}
        for name in self.keep:
            column = batch.column(name)
            columns[name] = column if rows is None else column.take(pa.array(rows))
        columns[PROBABILITY] = pa.array(probabilities)
        columns[DECISION] = pa.array(probabilities >= self.threshold)
        if self.reasons:
            for i, texts in enumerate(self._reasons(features, rows, len(probabilities)), 1):
                columns[REASON.format(i)] = pa.array(texts, pa.string())
        return pa.RecordBatch.from_pydict(columns)

    def _reasons(self, features, rows, n) -> list[list]:
        """reason_1..reason_N of each scored row: the explainer's sentences, largest contribution first."""
        values = []
        for feature in FEATURES:
            if feature.categorical:
                codes, clean = features[feature.name]
                column = np.array(clean, object)[codes]
            else:
                column = features[feature.name]
            values.append((column if rows is None else column[rows]).tolist())
        names = [f.name for f in FEATURES]
        customers = [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]
        texts = [[None] * n for _ in range(self.reasons)]
        for i, explanation in enumerate(self.explainer.explain(customers)):
            for j, reason in enumerate(explanation["reasons"][: self.reasons]):
                texts[j][i] = reason["text"]
        return texts

    def _rejects(self, batch, problems) -> tuple[pa.RecordBatch, np.ndarray]:
        if problems:
            rows = np.concatenate([p[0] for p in problems])
            order = np.lexsort((np.concatenate([np.full(len(p[0]), p[1]) for p in problems]), rows))
            take = pa.array(order)
            rows = rows[order]
            fields = pa.array([p[2] for p in problems for _ in p[0]], pa.string()).take(take)
            values = pa.concat_arrays([p[3] for p in problems]).take(take)
            messages = pa.array(np.concatenate([p[4] for p in problems]).tolist(), pa.string()).take(take)
            allowed = pa.array([allowed_text(p[5]) for p in problems for _ in p[0]], pa.string()).take(take)
        else:
            rows = np.zeros(0, np.int64)
            fields = values = messages = allowed = pa.array([], pa.string())
        columns = {name: batch.column(name).take(pa.array(rows, pa.int64())) for name in self.keep}
        columns.update(zip(REJECT_COLUMNS, (fields, values, messages, allowed), strict=True))
        return pa.RecordBatch.from_pydict(columns), rows


# ---- The local engine: a file in, a file of scores and a file of rejects out, a chunk at a time.


def file_format(path: Path) -> str:
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: the name should end in .csv or .parquet, the format it is read or written in")
    return fmt


def default_output(input_path: Path) -> Path:
    """Beside the input, named after it: customers.csv -> customers.scored.csv."""
    return input_path.with_name(f"{input_path.stem}.scored{input_path.suffix}")


def rejects_path(output: Path) -> Path:
    """Beside the output: customers.scored.csv -> customers.scored.rejects.csv (always CSV, to be read by people)."""
    return output.with_name(f"{output.stem}.rejects.csv")


@dataclass
class Chunks:
    """An input file's column names and a reader of its chunks, with how far through the file it is."""

    names: list[str]
    read: object  # (columns) -> iterator of record batches
    done: object  # () -> the fraction of the file read so far


def open_input(path: Path) -> Chunks:
    path = Path(path)
    fmt = file_format(path)
    try:
        if fmt == "parquet":
            parquet = pq.ParquetFile(path)
            total = max(parquet.metadata.num_rows, 1)
            progress = {"rows": 0}

            def read_parquet(columns):
                for batch in parquet.iter_batches(batch_size=CHUNK_ROWS, columns=columns):
                    progress["rows"] += batch.num_rows
                    yield batch

            return Chunks(parquet.schema_arrow.names, read_parquet, lambda: progress["rows"] / total)
        with pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 16)) as header:
            names = header.schema.names
    except (OSError, pa.ArrowInvalid) as e:
        raise InputError(f"cannot read {path}: {e}") from None
    size = max(path.stat().st_size, 1)
    source = {}

    def read_csv(columns):
        # Every column is text, as a client sends it; feature columns arrive dictionary-encoded from the reader.
        types = {name: CATEGORY_TEXT if feature_for(name) else pa.string() for name in columns}
        convert = pacsv.ConvertOptions(column_types=types, include_columns=columns)
        with pa.OSFile(str(path)) as stream:
            source["stream"] = stream
            blocks = pacsv.open_csv(
                stream, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES), convert_options=convert
            )
            yield from _together(blocks, CHUNK_ROWS)

    def csv_done():
        stream = source.get("stream")
        return 0.0 if stream is None or stream.closed else min(stream.tell() / size, 1.0)

    return Chunks(names, read_csv, csv_done)


def _together(batches, rows: int) -> Iterator[pa.RecordBatch]:
    """The batches put together into batches of at least rows rows (but the last)."""
    pending, count = [], 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]
            pending, count = [], 0
    if pending:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


class TableWriter:
    """Writes record batches to a CSV or Parquet file (by its name), into a partial file renamed when complete."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.format = file_format(self.path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.writer = None

    def write(self, batch: pa.RecordBatch) -> None:
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            open_writer = pacsv.CSVWriter if self.format == "csv" else pq.ParquetWriter
            self.writer = open_writer(str(self.partial), batch.schema)
        self.writer.write_batch(batch)

    def close(self) -> None:
        self.writer.close()
        self.partial.replace(self.path)

    def abandon(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.partial.unlink(missing_ok=True)


class Progress:
    """A one-line progress bar on a terminal (rows, rows/s, time left); silent when the stream is not a terminal."""

    INTERVAL = 0.2  # seconds between redraws

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.on = stream.isatty()
        self.start = self.drawn = time.perf_counter()

    def update(self, rows: int, done: float) -> None:
        now = time.perf_counter()
        if not self.on or now - self.drawn < self.INTERVAL:
            return
        self.drawn = now
        elapsed = now - self.start
        left = elapsed * (1 - done) / done if done > 0 else float("nan")
        width = 24
        bar = "#" * int(width * done) + "-" * (width - int(width * done))
        self.stream.write(
            f"\r[{bar}] {done:4.0%} {rows:,} rows  {rows / elapsed:,.0f} rows/s  {_duration(left)} left \x1b[K"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.on:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _duration(seconds: float) -> str:
    if seconds != seconds:
        return "--:--"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


@dataclass
class Summary:
    """What a run did: rows read, scored and rejected (rows with at least one problem), and how long it took."""

    read: int = 0
    scored: int = 0
    rejected: int = 0
    seconds: float = 0.0
    output: str = ""
    rejects: str = ""

    def line(self) -> str:
        rate = self.read / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.read:,} rows read, {self.scored:,} scored, {self.rejected:,} rejected in {self.seconds:.1f} s "
            f"({rate:,.0f} rows/s): scores in {self.output}, rejects in {self.rejects}"
        )


def score_file(
    input_path: Path,
    output: Path,
    model,
    threshold: float = 0.5,
    id_column: str | None = None,
    explainer=None,
    reasons: int = 0,
    progress: Progress | None = None,
) -> Summary:
    """Score a CSV or Parquet file of customers into output (CSV or Parquet by its name) and its rejects file.

    model is a churn.scoring.ServedModel. The output has the id column (or, without one, the row numbers),
    churn_probability and churn, in the input's order; the rejects file (rejects_path(output)) one line per problem.
    """
    start = time.perf_counter()
    chunks = open_input(input_path)
    plan = ColumnPlan.of(chunks.names, id_column)
    keep = [plan.id_column] if plan.id_column else []
    chunk_scorer = ChunkScorer(model.scorer, plan, threshold, keep, explainer, reasons)
    summary = Summary(output=str(output), rejects=str(rejects_path(output)))
    scores, rejects = TableWriter(output), TableWriter(rejects_path(output))

    def score_chunk(batch: pa.RecordBatch) -> None:
        result = chunk_scorer.score(batch)
        first_row = summary.read + 1
        scored = result.scored
        if not keep:
            scored = scored.add_column(0, ROW, pa.array(result.scored_rows + first_row))
        scores.write(scored)
        rejects.write(result.rejects.add_column(0, ROW, pa.array(result.reject_rows + first_row)))
        summary.read += batch.num_rows
        summary.scored += scored.num_rows
        summary.rejected += batch.num_rows - scored.num_rows

    try:
        for batch in chunks.read(plan.columns):
            score_chunk(batch)
            if progress:
                progress.update(summary.read, chunks.done())
        if scores.writer is None:  # an input with no rows still gets files with their header
            score_chunk(pa.RecordBatch.from_pylist([], schema=pa.schema([(c, pa.string()) for c in plan.columns])))
    except (pa.ArrowInvalid, OSError) as e:
        scores.abandon()
        rejects.abandon()
        raise InputError(f"cannot read {input_path}: {e}") from None
    finally:
        if progress:
            progress.close()
    scores.close()
    rejects.close()
    summary.seconds = time.perf_counter() - start
    return summary
