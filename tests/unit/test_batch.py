"""churn.batch.chunks: the API's rules for every value and spelling, in chunks, each distinct value cleaned once."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import score
from churn.batch import chunks as batch
from churn.batch.chunks import (
    ChunkScorer,
    ColumnPlan,
    InputError,
    OutputError,
    check_paths,
    default_output,
    location,
    rejects_path,
    score_file,
)
from churn.model.data import clean_text
from churn.model.schema import FEATURES, Feature, Problems, clean_customer
from tests.helpers import TOLERANCE, message, read_text_csv


def test_every_spelling_the_api_accepts(served_model, raw_text, expected):
    """Model spellings of the names and categories, numbers with spaces, blank TotalCharges as a space or nothing."""
    df = raw_text.rename(columns=clean_text)
    for f in FEATURES:
        if f.categorical:
            df[f.name] = df[f.name].map(lambda v: clean_text(v).upper() if len(v) % 2 else clean_text(v))
        else:
            df[f.name] = " " + df[f.name] + " "
    df.loc[df["totalcharges"].str.strip() == "", "totalcharges"] = ""
    chunk_scorer = ChunkScorer(served_model.scorer, ColumnPlan.of(list(df.columns)), keep=["customerid"])
    result = chunk_scorer.score(pa.RecordBatch.from_pandas(df, preserve_index=False))
    assert result.rejects.num_rows == 0
    assert np.abs(result.scored.column("churn_probability").to_numpy() - expected).max() <= TOLERANCE


def test_two_spellings_of_a_field_must_agree(served_model, raw_text):
    df = raw_text.head(4).copy()
    assert df["Partner"].tolist() == ["Yes", "No", "No", "No"]
    df["partner"] = ["yes", "yes", "NO", "No"]  # the second row disagrees
    df.loc[3, "Partner"] = "nobody"  # refused itself, not compared
    plan = ColumnPlan.of(list(df.columns))
    result = ChunkScorer(served_model.scorer, plan, keep=["customerID"]).score(pa.RecordBatch.from_pandas(df))
    problems = Problems()
    assert clean_customer(df.loc[1].to_dict(), problems) is None  # the API refuses it too, with this message
    assert result.reject_rows.tolist() == [1, 3]
    assert result.rejects.column("field").to_pylist() == ["partner", "Partner"]
    messages = [problems.details[0]["message"], message("Partner", "nobody")]
    assert result.rejects.column("message").to_pylist() == messages
    assert result.scored.column("customerID").to_pylist() == df.loc[[0, 2], "customerID"].tolist()


def test_each_distinct_value_is_cleaned_once(tmp_path, monkeypatch, big_files, served_model):
    calls = []
    clean = Feature.clean

    def counted(feature, value):
        calls.append((feature.name, value))
        return clean(feature, value)

    monkeypatch.setattr(Feature, "clean", counted)
    summary = score_file(big_files[100_000], tmp_path / "s.csv", served_model)
    assert summary.scored == 100_000
    distinct = read_text_csv(big_files[100_000])
    assert len(calls) == sum(distinct[f.column].nunique() for f in FEATURES)  # a few thousand: once each
    assert len(set(calls)) == len(calls)


def test_forgetting_the_memo_changes_nothing(tmp_path, monkeypatch, big_files, served_model):
    score_file(big_files[100_000], tmp_path / "remembered.csv", served_model)
    monkeypatch.setattr(batch, "MEMO_LIMIT", 10)
    score_file(big_files[100_000], tmp_path / "forgotten.csv", served_model)
    assert (tmp_path / "remembered.csv").read_bytes() == (tmp_path / "forgotten.csv").read_bytes()


@pytest.mark.parametrize("url", ["s3a://bucket/in/customers.csv", "hdfs://name:8020/in/customers.parquet"])
def test_a_url_is_kept_as_typed_with_its_outputs_beside_it(url):
    place = location(url)
    stem, suffix = url.rsplit(".", 1)
    assert place == url and default_output(place) == f"{stem}.scored.{suffix}"
    assert rejects_path(default_output(place)) == f"{stem}.scored.rejects.csv"
    check_paths(place, default_output(place), folders=True)  # Spark's to read: nothing to refuse
    with pytest.raises(InputError, match="--engine spark"):
        check_paths(place, default_output(place))
    with pytest.raises(OutputError, match="it is the input"):
        check_paths(place, place, folders=True)


def test_a_local_name_stays_a_path():
    assert location("customers.csv") == Path("customers.csv")
    assert default_output("customers.csv") == Path("customers.scored.csv")
    assert score.parse_args(["s3a://bucket/customers.csv", "--engine", "spark"]).input == "s3a://bucket/customers.csv"
    assert score.parse_args(["in/customers.csv"]).input == Path("in/customers.csv")
