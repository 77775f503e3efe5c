"""Score a customer base in chunks: the chunk scorer that score.py's local engine and churn.batch.spark both run.

A chunk is an Arrow record batch. Each column is dictionary-encoded and each distinct value goes through the schema's
one rule, Feature.clean, once (remembered across chunks), so a million rows cost a few thousand clean() calls; the
folded model then scores whole columns (LinearScorer.score_columns). A value clean() refuses, or two spellings of one
field that disagree, reject the row: the rejects list the row, its id, the field, the value, the message and what is
allowed, and every other row is scored. The local engine streams a CSV or Parquet file through it a chunk at a time,
so its memory does not grow with the file.

A CSV may be separated by commas, semicolons or tabs (found from its header) and write decimal commas (29,85); a row
with more or fewer fields than the header is rejected, not fatal. Text cells of a CSV written here that a spreadsheet
would run as a formula are neutralised (docs/batch.md).
"""

import csv
import itertools
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from churn.model.data import clean_text
from churn.model.schema import FEATURES, ID_COLUMN, Feature, InvalidValue, conflict, feature_for
from churn.model.scoring import LinearScorer
from churn.monitor.drift import Reference, added, counts_of

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
SEPARATORS = {",": "comma", ";": "semicolon", "\t": "tab"}  # the ones a CSV's header is tried with
MAX_HEADER_BYTES = 16 << 20  # a first line longer than this is no header
SAMPLE_ROWS = 1000  # rows looked at to tell a decimal comma
# OWASP's CSV injection advice: a text cell starting with one of these is run as a formula by spreadsheets.
FORMULA_START = "^[=+\\-@\t\r]"
# A number as text (optional sign, decimal point or comma, exponent): a spreadsheet reads it as a number, not a formula.
NUMBER_TEXT = "^ *[+-]?([0-9]+([.,][0-9]*)?|[.,][0-9]+)([eE][+-]?[0-9]+)? *$"


class InputError(Exception):
    """The input cannot be scored at all (a missing column, an unreadable file); the message says what to fix."""


class OutputError(InputError):
    """The output cannot be written (a folder, a full disk, the input itself); nothing is left behind."""


def allowed_text(feature: Feature) -> str:
    """What a field allows, for the rejects file: its model spellings (any case and spacing), or its range."""
    if feature.categorical:
        return " | ".join(feature.clean_values)
    blank = ", blank is 0" if feature.blank_is_zero else ""
    return f"{feature.kind} {feature.range}{blank}"


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

    def __init__(self, feature: Feature, decimal: str = "."):
        self.feature = feature
        # A decimal comma is read as the point Feature.clean takes: 29,85 is 29.85 (the rejects show it as written).
        self.comma = decimal == "," and not feature.categorical
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
                if self.comma and isinstance(value, str):
                    if "." in value:  # where the decimal mark is a comma, 1.889 may be 1889: not read as 1.889
                        raise InvalidValue(f"{self.feature.expected}, written with the file's decimal comma")
                    value = value.replace(",", ".")
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
    counts: dict | None = None  # with a reference: the scored rows per bin (churn.monitor.drift.counts_of)


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
        decimal: str = ".",
        reference: Reference | None = None,
    ):
        self.scorer, self.plan, self.threshold, self.keep = scorer, plan, threshold, list(keep)
        self.reference = reference  # counts the scored rows in its bins (score.py --drift)
        self.explainer, self.reasons = explainer, reasons
        if reasons and explainer is None:
            raise ValueError("reasons need an explainer")
        self.memos = {column: _Memo(feature, decimal) for feature, columns in plan.features for column in columns}

    def _clean(self, name: str, position: int, array: pa.Array) -> _CleanColumn:
        if pa.types.is_decimal(array.type):  # Feature.clean takes a float, not a Decimal; 29.85 stays 29.85
            array = array.cast(pa.float64())
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
        counts = counts_of(self.reference, features, probabilities, scored_rows) if self.reference else None
        return Scores(scored, rejects, np.arange(n) if scored_rows is None else scored_rows, reject_rows, counts)

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


# A URL (s3://, gs://, hdfs://, file://...): Spark reads and writes it; a Path would mangle it (s3://b/k: s3:/b/k).
URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def location(place: Path | str) -> Path | str:
    """A file as a local Path, or a URL kept as the text it is (a Path stays a Path)."""
    return place if isinstance(place, Path) or URL.match(place) else Path(place)


def file_format(path: Path | str) -> str:
    fmt = FORMATS.get(PurePosixPath(str(path)).suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: the name should end in .csv or .parquet, the format it is read or written in")
    return fmt


def beside(place: Path | str, name: str) -> Path | str:
    """The file called name in place's folder (a URL's, for a URL)."""
    place = location(place)
    return place.with_name(name) if isinstance(place, Path) else f"{place.rsplit('/', 1)[0]}/{name}"


def default_output(input_path: Path | str) -> Path | str:
    """Beside the input, named after it: customers.csv -> customers.scored.csv."""
    name = PurePosixPath(str(input_path))
    return beside(input_path, f"{name.stem}.scored{name.suffix}")


def rejects_path(output: Path | str) -> Path | str:
    """Beside the output: customers.scored.csv -> customers.scored.rejects.csv (always CSV, to be read by people)."""
    return beside(output, f"{PurePosixPath(str(output)).stem}.rejects.csv")


def same_file(a: Path, b: Path) -> bool:
    """Whether writing a would replace b, however either is spelt (symlinks, ./, .., hard links)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist: only the spellings can be compared
        return Path(a).resolve() == Path(b).resolve()


def check_paths(input_path: Path | str, output: Path | str, folders: bool = False) -> None:
    """OutputError, before anything is read, for an output or rejects file that would replace the input (or, being
    a folder Spark replaces whole, hold it), or that cannot be a file (folders=False) or be created at all. A URL
    only Spark (folders=True) reads, and only its text can be compared."""
    input_path, output = location(input_path), location(output)
    file_format(input_path)
    file_format(output)
    urls = [str(place) for place in (input_path, output) if isinstance(place, str)]
    if urls and not folders:
        raise InputError(f"{urls[0]}: a URL is read and written by --engine spark; the local engine takes files")
    if urls:
        for target in (output, rejects_path(output)):
            if str(target).rstrip("/") == str(input_path).rstrip("/"):
                raise OutputError(f"refusing to write {target}: it is the input {input_path}")
        return
    for target, what in ((output, "--output"), (rejects_path(output), f"the rejects file of --output {output}")):
        if same_file(target, input_path) or input_path.resolve().is_relative_to(target.resolve()):
            raise OutputError(f"refusing to write {target} ({what}): it is the input {input_path}")
        if not folders and target.is_dir():
            raise OutputError(f"cannot write {target} ({what}): it is a folder; name a .csv or .parquet file")
        parent = next((folder for folder in target.parents if folder.exists()), None)
        if parent is not None and not parent.is_dir():
            raise OutputError(f"cannot write {target} ({what}): {parent} is a file, not a folder")


@dataclass(frozen=True)
class Dialect:
    """How a CSV is read: its separator and decimal mark, and its first line (to say what was seen if it fails)."""

    separator: str = ","
    decimal: str = "."
    first_line: str = ""
    block_bytes: int = CSV_BLOCK_BYTES  # larger than the header, which must fit in the reader's first block

    def seen(self) -> str:
        line = self.first_line if len(self.first_line) <= 120 else self.first_line[:120] + "..."
        name = SEPARATORS.get(self.separator, repr(self.separator))
        return f"read as a CSV separated by {name} (--sep chooses); its first line is {line!r}"


def sniff_csv(path: Path, separator: str | None = None, decimal: str | None = None) -> Dialect:
    """How to read a CSV: the separator given, else whichever of comma, semicolon and tab splits the header into the
    most feature names (comma on a tie); the decimal mark given, else a comma where _decimal_mark finds one."""
    first = _first_line(path)
    try:
        text = first.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:  # compressed, binary, or another encoding: Arrow's reader would fail less clearly
        raise InputError(f"cannot read {path}: its first line is not UTF-8 text: {first[:60]!r}") from None
    if separator is None:
        separator = max(SEPARATORS, key=lambda candidate: _header_score(text, candidate))
    dialect = Dialect(separator, decimal or ".", text, max(CSV_BLOCK_BYTES, 4 * len(first)))
    # In a comma-separated file a decimal comma would have to be quoted, and 1,234 may be a thousand: only --decimal.
    if decimal is None and separator != ",":
        dialect = Dialect(separator, _decimal_mark(path, separator), text, dialect.block_bytes)
    return dialect


def _first_line(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            line = f.readline(MAX_HEADER_BYTES + 1)
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    if len(line) > MAX_HEADER_BYTES:
        raise InputError(f"cannot read {path}: its first line is over {MAX_HEADER_BYTES >> 20} MiB, not a CSV header")
    if not line:
        raise InputError(f"cannot read {path}: it is empty, with not even a header line")
    return line


def _header_score(line: str, separator: str) -> tuple[int, int]:
    """(feature names, fields) of the header split by separator."""
    try:
        names = next(csv.reader([line], delimiter=separator))
    except csv.Error:  # a field over csv's size limit: not this separator's best split
        return (0, 0)
    return (sum(feature_for(name) is not None for name in names), len(names))


def _decimal_mark(path: Path, separator: str) -> str:
    """A comma when the number columns of the first SAMPLE_ROWS rows write decimal commas (29,85) and never a point."""
    values = []
    try:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
            rows = csv.reader(f, delimiter=separator)
            header = next(rows, [])
            numbers = [i for i, name in enumerate(header) if (f := feature_for(name)) and not f.categorical]
            for row in itertools.islice(rows, SAMPLE_ROWS):
                values += [row[i] for i in numbers if i < len(row)]
    except (OSError, csv.Error):
        return "."  # the reader says what is wrong with the file
    comma = any(re.fullmatch(r" *\+?[0-9]*,[0-9]+ *", value) for value in values)
    return "," if comma and not any("." in value for value in values) else "."


def ragged_problem(number: int, found: int, expected: int, separator: str) -> tuple[str, str]:
    """The rejects' message and allowed for CSV row number (1: the first after the header) with found fields."""
    name = SEPARATORS.get(separator, repr(separator))
    return (
        f"line {number + 1} has {found} field{'s' * (found != 1)} where the header has {expected}",
        f"{expected} fields separated by {name}",
    )


def count_fields(line: str, separator: str) -> int:
    return len(next(csv.reader([line], delimiter=separator), []))


class _Ragged:
    """A CSV's rows with more or fewer fields than its header: the reader skips them (its invalid_row_handler), each
    is rejected with its line, and the other rows keep their numbers in the file. Only the skipped rows not yet in
    the rejects are kept, so memory does not grow with them."""

    def __init__(self, separator: str):
        self.separator = separator
        self.skipped = 0  # rows skipped so far
        self.taken = 0  # of which in the rejects already
        self.pending = []  # (rows given before it, row number, fields expected, fields found, the line), in order

    def __call__(self, row) -> str:
        # Arrow counts the header as 1 (blank lines not at all) when reading on one thread.
        number = row.number - 1
        self.pending.append((number - 1 - self.skipped, number, row.expected_columns, row.actual_columns, row.text))
        self.skipped += 1
        return "skip"

    def numbers(self, start: int, count: int) -> np.ndarray:
        """The row numbers in the file of the rows the reader gave as its start'th to start + count - 1'th (the
        skipped rows before start being taken)."""
        given = np.arange(start, start + count)
        before = np.array([row[0] for row in self.pending], np.int64)
        return given + 1 + self.taken + np.searchsorted(before, given, side="right")

    def rejects(self, until: int | None, schema: pa.Schema, id_at: int | None) -> pa.RecordBatch:
        """The rejects of the skipped rows before the until'th row the reader gives (all that are left when None),
        in schema (ROW, the id column when id_at is its place in the header, then REJECT_COLUMNS)."""
        end = sum(1 for row in self.pending if until is None or row[0] < until)
        rows, self.pending = self.pending[:end], self.pending[end:]
        self.taken += end
        problems = [ragged_problem(number, found, want, self.separator) for _, number, want, found, _ in rows]
        columns = {
            ROW: [row[1] for row in rows],
            "field": [None] * len(rows),
            "value": [row[4] for row in rows],
            "message": [message for message, _ in problems],
            "allowed": [allowed for _, allowed in problems],
        }
        if id_at is not None:
            columns[schema.names[1]] = [self._field(row[4], id_at) for row in rows]
        return pa.RecordBatch.from_pydict({n: columns[n] for n in schema.names}, schema=schema)

    def _field(self, line: str, at: int) -> str | None:
        fields = next(csv.reader([line], delimiter=self.separator), [])  # a ragged row is still split by the separator
        return fields[at] if at < len(fields) else None


@dataclass
class Chunks:
    """An input file's column names and a reader of its chunks, with how far through the file it is."""

    names: list[str]
    read: object  # (columns) -> iterator of record batches
    done: object  # () -> the fraction of the file read so far
    schema: pa.Schema | None = None  # a Parquet file's, whose feature columns may have types no value is read from
    dialect: Dialect | None = None  # a CSV's
    ragged: _Ragged | None = None  # a CSV's skipped rows

    def plan(self, id_column: str | None, path: Path) -> ColumnPlan:
        """The ColumnPlan of the file; InputError (saying how a CSV was read) when it cannot be scored."""
        try:
            plan = ColumnPlan.of(self.names, id_column)
        except InputError as e:
            raise InputError(f"{e} ({self.dialect.seen()})" if self.dialect else str(e)) from None
        if self.schema is not None:
            check_types(self.schema, plan, path)
        return plan


READABLE_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer, pa.types.is_decimal)
READABLE_TYPES += (pa.types.is_float32, pa.types.is_float64, pa.types.is_boolean, pa.types.is_null)


def check_types(schema: pa.Schema, plan: ColumnPlan, path) -> None:
    """InputError naming a feature column of a type no value could be read from (a struct, a list, float16...)."""
    for _, columns in plan.features:
        for name in columns:
            kind = schema.field(name).type
            values = kind.value_type if pa.types.is_dictionary(kind) else kind
            if not any(readable(values) for readable in READABLE_TYPES):
                raise InputError(f"cannot read {path}: its column {name} is {kind}, but a feature is text or a number")


@contextmanager
def _reading(path: Path, dialect: Dialect | None = None):
    """Arrow's errors while reading, as an InputError naming the file (and what was seen of a CSV)."""
    hook = sys.unraisablehook
    # Arrow decodes a ragged row's text before the handler sees it; a row that is not UTF-8 fails there, and then
    # the read fails with Arrow's message: Python's own report of the first failure would only repeat it.
    sys.unraisablehook = lambda failure: None if isinstance(failure.exc_value, UnicodeDecodeError) else hook(failure)
    try:
        yield
    except (OSError, pa.ArrowException) as e:
        seen = f" ({dialect.seen()})" if dialect else ""
        raise InputError(f"cannot read {path}: {e}{seen}") from None
    finally:
        sys.unraisablehook = hook


def open_input(path: Path, separator: str | None = None, decimal: str | None = None) -> Chunks:
    """A CSV or Parquet file's Chunks; a CSV's separator and decimal mark as given, or as sniff_csv finds them."""
    path = Path(path)
    if file_format(path) == "csv":
        return _open_csv(path, sniff_csv(path, separator, decimal))
    with _reading(path):
        parquet = pq.ParquetFile(path)
    total = max(parquet.metadata.num_rows, 1)
    progress = {"rows": 0}

    def read_parquet(columns):
        with _reading(path):
            for batch in parquet.iter_batches(batch_size=CHUNK_ROWS, columns=columns):
                progress["rows"] += batch.num_rows
                yield batch

    return Chunks(parquet.schema_arrow.names, read_parquet, lambda: progress["rows"] / total, parquet.schema_arrow)


def _open_csv(path: Path, dialect: Dialect) -> Chunks:
    with _reading(path, dialect):
        header = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=dialect.block_bytes, use_threads=False),
            parse_options=pacsv.ParseOptions(delimiter=dialect.separator, invalid_row_handler=lambda row: "skip"),
        )
        names = header.schema.names
        header.close()
    size = max(path.stat().st_size, 1)
    source = {}
    ragged = _Ragged(dialect.separator)

    def read_csv(columns):
        # Every column is text, as a client sends it; feature columns arrive dictionary-encoded from the reader.
        types = {name: CATEGORY_TEXT if feature_for(name) else pa.string() for name in columns}
        convert = pacsv.ConvertOptions(column_types=types, include_columns=columns)
        # On one thread the reader numbers the rows it skips, so that each is rejected with its line.
        read = pacsv.ReadOptions(block_size=dialect.block_bytes, use_threads=False)
        parse = pacsv.ParseOptions(delimiter=dialect.separator, invalid_row_handler=ragged)
        with _reading(path, dialect), pa.OSFile(str(path)) as stream:
            source["stream"] = stream
            blocks = pacsv.open_csv(stream, read_options=read, parse_options=parse, convert_options=convert)
            yield from _together(blocks, CHUNK_ROWS)

    def csv_done():
        stream = source.get("stream")
        return 0.0 if stream is None or stream.closed else min(stream.tell() / size, 1.0)

    return Chunks(names, read_csv, csv_done, dialect=dialect, ragged=ragged)


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


def neutralised(batch: pa.RecordBatch, number_fields: Sequence[str] = ()) -> pa.RecordBatch:
    """batch with each text cell that a spreadsheet would run as a formula prefixed with ' (OWASP's advice against
    CSV injection). Numbers stay numbers: typed columns are left alone, and so is a rejects value written as a number
    in one of number_fields (tenure -1), which a spreadsheet reads as that number."""
    exempt = None
    if number_fields:
        in_number_field = pc.is_in(batch.column("field"), value_set=pa.array(list(number_fields), pa.string()))
        exempt = pc.and_(in_number_field, pc.match_substring_regex(batch.column("value"), NUMBER_TEXT)).fill_null(False)
    arrays = []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            column = column.cast(pa.string())
            risky = pc.match_substring_regex(column, FORMULA_START)
            if exempt is not None and name == "value":
                risky = pc.and_(risky, pc.invert(exempt))
            column = pc.if_else(risky, pc.binary_join_element_wise("'", column, ""), column)
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


class TableWriter:
    """Writes record batches to a CSV or Parquet file (by its name), into a partial file renamed when complete.
    A CSV's text cells are neutralised (see neutralised; number_fields for a rejects file)."""

    def __init__(self, path: Path, number_fields: Sequence[str] = ()):
        self.path = Path(path)
        self.format = file_format(self.path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.number_fields = number_fields
        self.writer = None
        self.started = False  # the partial file was opened (or its opening tried): it is ours to remove
        self.committed = False

    def write(self, batch: pa.RecordBatch) -> None:
        if self.format == "csv":
            batch = neutralised(batch, self.number_fields)
        with self._writing():
            if self.writer is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.started = True
                open_writer = pacsv.CSVWriter if self.format == "csv" else pq.ParquetWriter
                self.writer = open_writer(str(self.partial), batch.schema)
            self.writer.write_batch(batch)

    def finish(self) -> None:
        """Close the partial file (a full disk may show only here)."""
        with self._writing():
            self.writer.close()

    def commit(self) -> None:
        with self._writing():
            self.partial.replace(self.path)
        self.committed = True

    def abandon(self) -> None:
        """Remove what was written: the partial file, or the file itself when the run fails after it was renamed."""
        if self.writer is not None:
            try:
                self.writer.close()
            except (OSError, pa.ArrowException):
                pass  # the error that made the run abandon it is the one reported
        if self.started:
            self.partial.unlink(missing_ok=True)
        if self.committed:
            self.path.unlink(missing_ok=True)

    @contextmanager
    def _writing(self):
        try:
            yield
        except (OSError, pa.ArrowException) as e:
            raise OutputError(f"cannot write {self.path}: {e}") from None


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
    counts: dict | None = None  # with a reference: the scored rows per bin of each feature (score.py --drift)

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
    separator: str | None = None,
    decimal: str | None = None,
    reference: Reference | None = None,
) -> Summary:
    """Score a CSV or Parquet file of customers into output (CSV or Parquet by its name) and its rejects file; with
    a reference, count the scored rows in its bins (Summary.counts).

    model is a churn.model.scoring.ServedModel. The output has the id column (or, without one, the row numbers),
    churn_probability and churn, in the input's order; the rejects file (rejects_path(output)) one line per problem.
    A CSV's separator and decimal mark are as given, or found (sniff_csv). Any error leaves neither file behind.
    """
    start = time.perf_counter()
    check_paths(input_path, output)
    chunks = open_input(input_path, separator, decimal)
    plan = chunks.plan(id_column, input_path)
    keep = [plan.id_column] if plan.id_column else []
    mark = chunks.dialect.decimal if chunks.dialect else "."
    chunk_scorer = ChunkScorer(model.scorer, plan, threshold, keep, explainer, reasons, mark, reference)
    run = _FileRun(chunk_scorer, chunks, Path(output))
    try:
        run.run(progress)
    finally:
        if progress:
            progress.close()
    run.summary.seconds = time.perf_counter() - start
    return run.summary


class _FileRun:
    """One local run: each chunk scored and written, rows numbered as in the file, a CSV's skipped rows rejected
    in their place; both files complete, or neither left behind."""

    def __init__(self, chunk_scorer: ChunkScorer, chunks: Chunks, output: Path):
        self.chunk_scorer, self.chunks = chunk_scorer, chunks
        plan = chunk_scorer.plan
        numbers = [name for feature, names in plan.features if not feature.categorical for name in names]
        self.scores, self.rejects = TableWriter(output), TableWriter(rejects_path(output), numbers)
        self.summary = Summary(output=str(output), rejects=str(self.rejects.path))
        self.given = 0  # rows the reader has given
        self.reject_schema = None  # the rejects' columns, known from the first chunk
        self.id_at = chunks.names.index(plan.id_column) if plan.id_column else None

    def run(self, progress: Progress | None) -> None:
        plan = self.chunk_scorer.plan
        try:
            for batch in self.chunks.read(plan.columns):
                self.score(batch)
                if progress:
                    progress.update(self.summary.read, self.chunks.done())
            if self.scores.writer is None:  # an input with no rows still gets files with their header
                self.score(pa.RecordBatch.from_pylist([], schema=pa.schema([(c, pa.string()) for c in plan.columns])))
            self.write_rejects(self.skipped(None))  # rows skipped after the last one read
            for writer in (self.scores, self.rejects):
                writer.finish()
            for writer in (self.scores, self.rejects):
                writer.commit()
        except BaseException:
            self.scores.abandon()
            self.rejects.abandon()
            raise

    def score(self, batch: pa.RecordBatch) -> None:
        result = self.chunk_scorer.score(batch)
        if self.chunks.ragged is None:
            numbers = np.arange(self.given + 1, self.given + batch.num_rows + 1)
        else:
            numbers = self.chunks.ragged.numbers(self.given, batch.num_rows)
        self.given += batch.num_rows
        scored = result.scored
        if not self.chunk_scorer.keep:
            scored = scored.add_column(0, ROW, pa.array(numbers[result.scored_rows]))
        self.scores.write(scored)
        rejects = result.rejects.add_column(0, ROW, pa.array(numbers[result.reject_rows], pa.int64()))
        self.reject_schema = rejects.schema
        skipped = self.skipped(self.given)
        if skipped.num_rows:  # in the file's order: a skipped row's line among the others' problems
            table = pa.Table.from_batches([rejects, skipped])
            rejects = table.take(pc.sort_indices(table, [(ROW, "ascending")])).combine_chunks().to_batches()[0]
        self.write_rejects(rejects)
        self.summary.read += batch.num_rows
        self.summary.scored += scored.num_rows
        if result.counts is not None:
            self.summary.counts = added(self.summary.counts, result.counts)
        self.summary.rejected += batch.num_rows - scored.num_rows

    def skipped(self, until: int | None) -> pa.RecordBatch:
        """The rejects of the CSV rows the reader skipped before its until'th row (the rest when None)."""
        if self.chunks.ragged is None:
            return pa.RecordBatch.from_pylist([], schema=self.reject_schema)
        batch = self.chunks.ragged.rejects(until, self.reject_schema, self.id_at)
        self.summary.read += batch.num_rows
        self.summary.rejected += batch.num_rows
        return batch

    def write_rejects(self, rejects: pa.RecordBatch) -> None:
        if rejects.num_rows or self.rejects.writer is None:
            self.rejects.write(rejects)
