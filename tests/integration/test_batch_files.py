"""score.py on the files people have: ragged rows, semicolons, tabs and decimal commas, an output that would replace
the input, cells a spreadsheet would run as formulas, and inputs or outputs that cannot be used (one line, exit 2,
nothing left behind)."""

import gzip
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churn.batch import chunks as batch
from churn.batch.chunks import score_file
from devtools import ROOT
from tests.helpers import TOLERANCE, read_text_csv, run_score

HEADER_FIELDS = 21


def lines_of(df: pd.DataFrame, separator: str = ",") -> list[str]:
    """df as CSV lines (the header first), every cell written as it is."""
    return [separator.join(df.columns), *(separator.join(row) for row in df.values.tolist())]


def write_lines(path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n")


def scores_of(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"customerID": str})


def assert_one_line_error(run, *words) -> str:
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stdout == ""
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: "), run.stderr
    for word in words:
        assert word in run.stderr
    return run.stderr


# ---- 1. A ragged row is rejected with its line; the other rows are scored.


def ragged_lines(df: pd.DataFrame) -> list[str]:
    """df's first 20 rows with row 4 one field short, row 9 one field long and row 20 cut to 3 fields."""
    lines = lines_of(df.head(20))
    lines[4] = lines[4].rsplit(",", 1)[0]
    lines[9] += ",extra"
    lines[20] = ",".join(lines[20].split(",")[:3])
    return lines


def test_a_ragged_row_is_rejected_with_its_line(tmp_path, raw_text, expected):  # noqa: F811
    lines = ragged_lines(raw_text)
    write_lines(tmp_path / "customers.csv", lines)
    run = run_score(tmp_path / "customers.csv")
    assert run.returncode == 1, run.stderr
    assert run.stdout.startswith("20 rows read, 17 scored, 3 rejected in ")
    rejects = read_text_csv(tmp_path / "customers.scored.rejects.csv")
    ids = raw_text["customerID"]
    assert rejects.values.tolist() == [
        ["4", ids[3], "", lines[4], "line 5 has 20 fields where the header has 21", "21 fields separated by comma"],
        ["9", ids[8], "", lines[9], "line 10 has 22 fields where the header has 21", "21 fields separated by comma"],
        ["20", ids[19], "", lines[20], "line 21 has 3 fields where the header has 21", "21 fields separated by comma"],
    ]
    scores = scores_of(tmp_path / "customers.scored.csv")
    kept = [i for i in range(20) if i not in (3, 8, 19)]
    assert scores["customerID"].tolist() == ids[kept].tolist()
    assert np.abs(scores["churn_probability"].to_numpy() - expected[kept]).max() <= TOLERANCE


def test_rows_keep_their_numbers_across_chunks(tmp_path, monkeypatch, raw_text, served_model):  # noqa: F811
    """Without an id column the scores are numbered by row: a skipped row leaves its number out, in every chunk."""
    lines = ragged_lines(raw_text.drop(columns=["customerID"]))
    write_lines(tmp_path / "customers.csv", lines)
    whole = score_file(tmp_path / "customers.csv", tmp_path / "whole.csv", served_model)
    assert (whole.read, whole.scored, whole.rejected) == (20, 17, 3)
    monkeypatch.setattr(batch, "CHUNK_ROWS", 3)
    monkeypatch.setattr(batch, "CSV_BLOCK_BYTES", 1024)  # several blocks, as a large file has
    chunked = score_file(tmp_path / "customers.csv", tmp_path / "chunked.csv", served_model)
    assert (chunked.read, chunked.scored, chunked.rejected) == (20, 17, 3)
    scores = read_text_csv(tmp_path / "chunked.csv")
    assert scores["row"].tolist() == [str(row) for row in range(1, 21) if row not in (4, 9, 20)]
    for name in ("whole.csv", "whole.rejects.csv"):
        assert (tmp_path / name).read_text() == (tmp_path / name.replace("whole", "chunked")).read_text()


# ---- 2. Semicolons, tabs and decimal commas.


def with_decimal_commas(text: pd.DataFrame) -> pd.DataFrame:
    df = text.copy()
    for column in ("MonthlyCharges", "TotalCharges"):
        df[column] = df[column].str.replace(".", ",")
    return df


@pytest.mark.parametrize(
    "separator, commas, flags",
    [
        (";", True, []),  # Excel's CSV where the decimal mark is a comma: found, both of them
        ("\t", False, []),  # a tab-separated export
        ("\t", True, []),
        (";", False, ["--sep", ";"]),
        (";", True, ["--sep", ";", "--decimal", ","]),
    ],
)
def test_semicolons_tabs_and_decimal_commas(tmp_path, raw_text, expected, separator, commas, flags):  # noqa: F811
    df = with_decimal_commas(raw_text) if commas else raw_text
    write_lines(tmp_path / "customers.csv", lines_of(df, separator))
    run = run_score(tmp_path / "customers.csv", *flags)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("7,043 rows read, 7,043 scored, 0 rejected")
    scores = scores_of(tmp_path / "customers.scored.csv")
    assert scores["customerID"].tolist() == raw_text["customerID"].tolist()
    assert np.abs(scores["churn_probability"].to_numpy() - expected).max() <= TOLERANCE


def test_a_point_where_the_decimal_mark_is_a_comma_is_refused(tmp_path, raw_text):  # noqa: F811
    """1.889 may be a thousand where 29,85 is 29.85: the row is rejected, not read as 1.889. (The point makes the
    decimal mark unclear, so it is not found: --decimal says it.)"""
    df = with_decimal_commas(raw_text.head(20))
    df.loc[4, "TotalCharges"] = "1.889"
    write_lines(tmp_path / "c.csv", lines_of(df, ";"))
    assert run_score(tmp_path / "c.csv", "--decimal", ",").returncode == 1
    rejects = read_text_csv(tmp_path / "c.scored.rejects.csv")
    message = "Input should be a number from 0 to 100000000, written with the file's decimal comma"
    assert rejects[["row", "field", "value", "message"]].values.tolist() == [["5", "TotalCharges", "1.889", message]]


def test_a_quoted_decimal_comma_in_a_comma_csv_needs_the_flag(tmp_path, raw_text, expected):  # noqa: F811
    """In a comma-separated file "1,234" may be a thousand: a decimal comma is read only when --decimal says so."""
    df = with_decimal_commas(raw_text.head(50))
    df.to_csv(tmp_path / "customers.csv", index=False)
    run = run_score(tmp_path / "customers.csv")
    assert run.returncode == 1
    assert set(read_text_csv(tmp_path / "customers.scored.rejects.csv")["field"]) == {"MonthlyCharges", "TotalCharges"}
    run = run_score(tmp_path / "customers.csv", "--decimal", ",")
    assert run.returncode == 0, run.stderr
    scores = scores_of(tmp_path / "customers.scored.csv")
    assert np.abs(scores["churn_probability"].to_numpy() - expected[:50]).max() <= TOLERANCE
    assert read_text_csv(tmp_path / "customers.scored.csv").shape == (50, 3)


def test_an_unreadable_csv_says_what_was_seen(tmp_path, raw_text):  # noqa: F811
    write_lines(tmp_path / "customers.csv", lines_of(raw_text.head(5), "|"))
    run = run_score(tmp_path / "customers.csv")
    error = assert_one_line_error(run, "no column for gender", "read as a CSV separated by comma", "--sep")
    assert "its first line is 'customerID|gender|SeniorCitizen|" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["customers.csv"]
    run = run_score(tmp_path / "customers.csv", "--sep", ";")
    assert_one_line_error(run, "separated by semicolon")


def test_a_compressed_or_binary_csv_is_one_line(tmp_path, dataset_path):
    (tmp_path / "c.csv").write_bytes(gzip.compress(dataset_path.read_bytes()))
    assert_one_line_error(run_score(tmp_path / "c.csv"), "its first line is not UTF-8 text: b'\\x1f\\x8b")
    lines = dataset_path.read_bytes().splitlines()[:3] + [b"\xff\xfe,1,2"]  # a ragged row Arrow cannot decode
    (tmp_path / "c.csv").write_bytes(b"\n".join(lines) + b"\n")
    assert_one_line_error(run_score(tmp_path / "c.csv"), "Expected 21 columns, got 3", "separated by comma")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.csv"]


# ---- 4. The input is never overwritten, however its name is spelt.


def spellings(tmp_path) -> list[tuple[str, str]]:
    """(INPUT, --output) pairs where the output or its rejects file is the input's file, relative to tmp_path."""
    (tmp_path / "sub").mkdir()
    os.symlink("c.csv", tmp_path / "link.csv")
    os.link(tmp_path / "c.csv", tmp_path / "hard.csv")
    os.symlink("d.rejects.csv", tmp_path / "e.rejects.csv")
    return [
        ("c.csv", "c.csv"),
        ("c.csv", "./c.csv"),
        ("./c.csv", "sub/../c.csv"),
        ("c.csv", str(tmp_path / "c.csv")),
        ("c.csv", "link.csv"),  # a symlink to the input
        ("link.csv", "c.csv"),
        ("c.csv", "hard.csv"),  # another name of the same inode
        ("d.rejects.csv", "d.csv"),  # the rejects file would replace the input
        ("d.rejects.csv", "sub/../d.csv"),
        ("d.rejects.csv", "e.csv"),  # e.rejects.csv links to the input
    ]


@pytest.mark.parametrize("engine", ["local", "spark"])
def test_the_input_is_never_overwritten(tmp_path, raw_text, engine):  # noqa: F811
    raw_text.head(5).to_csv(tmp_path / "c.csv", index=False)
    raw_text.head(5).to_csv(tmp_path / "d.rejects.csv", index=False)
    for input_name, output in spellings(tmp_path):
        before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir() if p.is_file()}
        # A missing model: refused before it, or anything else, is read.
        command = [sys.executable, ROOT / "score.py", input_name, "--output", output, "--engine", engine]
        run = subprocess.run(
            [*map(str, command), "--model", "missing.bin"], cwd=tmp_path, capture_output=True, text=True
        )
        assert_one_line_error(run, "error: refusing to write ", "it is the input")
        after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir() if p.is_file()}
        assert after == before, (input_name, output)


# ---- 5. Cells a spreadsheet would run as formulas.

HOSTILE_IDS = ["=1+2", "+SUM(A1)", "-2+3", "@cmd", "\t=1", "\r=1", "-5", "ok-1", "'=quoted"]


def test_formula_cells_are_neutralised_in_csv_only(tmp_path, raw_text):  # noqa: F811
    df = raw_text.head(len(HOSTILE_IDS) + 4).copy()
    df["customerID"] = HOSTILE_IDS + ["a", "b", "c", "d"]
    rows = len(HOSTILE_IDS)
    df.loc[rows, "tenure"] = "-1"  # a number, refused: stays a number
    df.loc[rows + 1, "tenure"] = "=1+1"
    df.loc[rows + 2, "gender"] = "-1"  # not a number field: text, neutralised
    df.loc[rows + 3, "gender"] = "@SUM(1)"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "c.parquet")
    assert run_score(tmp_path / "c.parquet", "--output", tmp_path / "s.csv").returncode == 1
    scores = read_text_csv(tmp_path / "s.csv")
    safe = ["'=1+2", "'+SUM(A1)", "'-2+3", "'@cmd", "'\t=1", "'\r=1", "'-5", "ok-1", "'=quoted"]
    assert scores["customerID"].tolist() == safe
    assert scores["churn_probability"].astype(float).between(0, 1).all()  # numbers, not prefixed
    rejects = read_text_csv(tmp_path / "s.rejects.csv")
    assert rejects[["row", "customerID", "field", "value"]].values.tolist() == [
        [str(rows + 1), "a", "tenure", "-1"],
        [str(rows + 2), "b", "tenure", "'=1+1"],
        [str(rows + 3), "c", "gender", "'-1"],
        [str(rows + 4), "d", "gender", "'@SUM(1)"],
    ]
    # Parquet is no spreadsheet: the ids stay as they were.
    assert run_score(tmp_path / "c.parquet", "--output", tmp_path / "s.parquet").returncode == 1
    assert pq.read_table(tmp_path / "s.parquet").column("customerID").to_pylist() == HOSTILE_IDS


def test_a_ragged_row_that_starts_a_formula_is_neutralised(tmp_path, raw_text):  # noqa: F811
    lines = lines_of(raw_text.head(3))
    lines[2] = "=HYPERLINK(x)," + lines[2].split(",", 1)[1].rsplit(",", 1)[0]
    write_lines(tmp_path / "c.csv", lines)
    assert run_score(tmp_path / "c.csv").returncode == 1
    rejects = read_text_csv(tmp_path / "c.scored.rejects.csv")
    assert rejects[["row", "customerID", "value"]].values.tolist() == [["2", "'=HYPERLINK(x)", "'" + lines[2]]]


# ---- 6. Inputs and outputs that cannot be used: one line, exit 2, no files left behind.


@pytest.mark.parametrize(
    "kind, values, named",
    [
        (pa.struct([("amount", pa.float64())]), lambda xs: [{"amount": x} for x in xs], "struct<amount: double>"),
        (pa.list_(pa.float64()), lambda xs: [[x] for x in xs], "list<element: double>"),
        (pa.float16(), lambda xs: np.array(xs, np.float16), "halffloat"),
    ],
    ids=["struct", "list", "float16"],
)
def test_parquet_feature_columns_of_other_types_are_refused(tmp_path, raw_df, kind, values, named):
    table = pa.Table.from_pandas(raw_df.head(10), preserve_index=False)
    at = table.schema.get_field_index("MonthlyCharges")
    table = table.set_column(at, "MonthlyCharges", pa.array(values(raw_df["MonthlyCharges"].head(10)), kind))
    pq.write_table(table, tmp_path / "c.parquet")
    run = run_score(tmp_path / "c.parquet")
    assert_one_line_error(run, f"its column MonthlyCharges is {named}, but a feature is text or a number")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.parquet"]


def test_decimal_columns_are_numbers(tmp_path, raw_df, expected):  # noqa: F811
    df = raw_df.copy()
    df["TotalCharges"] = pd.to_numeric(df["TotalCharges"], errors="coerce").fillna(0)
    table = pa.Table.from_pandas(df, preserve_index=False)
    kinds = {"MonthlyCharges": pa.decimal128(10, 2), "TotalCharges": pa.decimal128(12, 2), "tenure": pa.decimal128(5)}
    for name, kind in kinds.items():
        table = table.set_column(table.schema.get_field_index(name), name, decimals(table.column(name), kind))
    pq.write_table(table, tmp_path / "c.parquet")
    assert pq.read_schema(tmp_path / "c.parquet").field("MonthlyCharges").type == pa.decimal128(10, 2)
    run = run_score(tmp_path / "c.parquet", "--output", tmp_path / "s.csv")
    assert run.returncode == 0, run.stderr
    scores = scores_of(tmp_path / "s.csv")
    assert np.abs(scores["churn_probability"].to_numpy() - expected).max() <= TOLERANCE


def decimals(column, kind):
    """Floats as decimals: 29.85 as the decimal 29.85 (via its shortest text, not its binary value)."""
    return pa.array([str(x) for x in column.to_pylist()]).cast(kind)


def test_an_output_folder_is_refused(tmp_path, raw_text):  # noqa: F811
    raw_text.head(5).to_csv(tmp_path / "c.csv", index=False)
    (tmp_path / "out.csv").mkdir()
    run = run_score(tmp_path / "c.csv", "--output", tmp_path / "out.csv")
    assert_one_line_error(run, f"cannot write {tmp_path / 'out.csv'}", "it is a folder")
    (tmp_path / "s.rejects.csv").mkdir()
    run = run_score(tmp_path / "c.csv", "--output", tmp_path / "s.csv")
    assert_one_line_error(run, f"cannot write {tmp_path / 's.rejects.csv'}", "it is a folder")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["c.csv", "out.csv", "s.rejects.csv"]


def test_a_failed_write_says_it_cannot_write(tmp_path, raw_text):  # noqa: F811
    raw_text.to_csv(tmp_path / "c.csv", index=False)
    os.symlink("/dev/full", tmp_path / "s.csv.partial")  # the disk fills up while the scores are written
    run = run_score(tmp_path / "c.csv", "--output", tmp_path / "s.csv")
    error = assert_one_line_error(run, f"cannot write {tmp_path / 's.csv'}", "No space left on device")
    assert "cannot read" not in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.csv"]
    (tmp_path / "file").write_text("")
    run = run_score(tmp_path / "c.csv", "--output", tmp_path / "file" / "s.csv")
    assert_one_line_error(run, f"cannot write {tmp_path / 'file' / 's.csv'}", "is a file, not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.csv", "file"]


def test_a_header_over_64_kib_is_read(tmp_path, raw_text, expected):  # noqa: F811
    df = raw_text.head(100).copy()
    for i in range(300):  # other columns with long names: an export with many fields
        df[f"note_{i}_" + "x" * 250] = str(i)
    df.to_csv(tmp_path / "c.csv", index=False)
    assert len((tmp_path / "c.csv").read_text().split("\n", 1)[0]) > 64 << 10
    run = run_score(tmp_path / "c.csv")
    assert run.returncode == 0, run.stderr
    scores = scores_of(tmp_path / "c.scored.csv")
    assert np.abs(scores["churn_probability"].to_numpy() - expected[:100]).max() <= TOLERANCE


def test_an_empty_file_says_so(tmp_path):
    (tmp_path / "c.csv").write_text("")
    assert_one_line_error(run_score(tmp_path / "c.csv"), "it is empty")


# ---- 3. Spark: the names are checked before Spark (or pyspark) starts.

BEFORE_SPARK = """
import sys, time
import score
start = time.perf_counter()
status = score.main(sys.argv[1:])
print(status, time.perf_counter() - start, "pyspark" in sys.modules)
"""


@pytest.mark.parametrize("output", ["scores.txt", "c.csv", "folder/scores.csv"])
def test_spark_checks_the_names_before_it_starts(tmp_path, raw_text, output):  # noqa: F811
    raw_text.head(5).to_csv(tmp_path / "c.csv", index=False)
    (tmp_path / "folder").write_text("")  # a file where the output's folder would be
    command = [sys.executable, "-c", BEFORE_SPARK, tmp_path / "c.csv", "--engine", "spark", "--output", output]
    run = subprocess.run(
        list(map(str, command)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    status, seconds, started = run.stdout.split()
    assert (status, started) == ("2", "False"), run.stderr
    assert float(seconds) < 0.5
    assert run.stderr.count("\n") == 1 and output.split("/")[0] in run.stderr
