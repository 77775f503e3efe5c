import os
import subprocess
import sys

import pandas as pd
import pytest

from churn.model.data import (
    DATA_FILE_NAME,
    DATA_SHA256,
    DEFAULT_DATA_PATH,
    PROJECT_ROOT,
    DataError,
    clean_frame,
    clean_text,
    data_candidates,
    download_data,
    file_sha256,
    find_data,
)
from devtools import free_port


def test_clean_text_is_the_training_rule():
    assert clean_text("Fiber optic") == "fiber_optic"
    assert clean_text("MonthlyCharges") == "monthlycharges"
    assert clean_text("Bank transfer (automatic)") == "bank_transfer_(automatic)"
    assert clean_text(clean_text("No internet service")) == "no_internet_service"


def test_pandas_3_has_no_object_columns_to_select(raw_df):
    # The course's `df.dtypes == 'object'` selection relies on object columns; pandas 3 reads text as `str`.
    assert int(pd.__version__.split(".")[0]) >= 3
    assert not (raw_df.dtypes == "object").any()


def test_clean_frame_cleans_every_text_column(raw_df, clean_df):
    assert list(clean_df.columns) == [clean_text(c) for c in raw_df.columns]
    assert set(clean_df["internetservice"]) == {"dsl", "fiber_optic", "no"}
    assert set(clean_df["paymentmethod"]) == {
        "electronic_check",
        "mailed_check",
        "bank_transfer_(automatic)",
        "credit_card_(automatic)",
    }
    text_columns = [c for c in clean_df.columns if pd.api.types.is_string_dtype(clean_df[c])]
    for column in text_columns:
        values = clean_df[column].astype(str)
        assert not values.str.contains(" ").any(), column
        assert (values == values.str.lower()).all(), column


def test_labels_and_blank_total_charges(raw_df, clean_df):
    assert len(clean_df) == 7043
    assert set(clean_df["churn"]) == {0, 1}
    assert clean_df["churn"].sum() == (raw_df["Churn"] == "Yes").sum() == 1869
    blank = raw_df["TotalCharges"].str.strip() == ""
    assert blank.sum() == 11
    assert (clean_df.loc[blank, "totalcharges"] == 0).all()
    assert pd.api.types.is_float_dtype(clean_df["totalcharges"])


def test_clean_frame_also_cleans_object_columns():
    df = pd.DataFrame({"Contract": pd.Series(["One year"], dtype=object), "TotalCharges": [" "], "Churn": ["Yes"]})
    cleaned = clean_frame(df)
    assert cleaned.to_dict(orient="records") == [{"contract": "one_year", "totalcharges": 0.0, "churn": 1}]


def test_download_checks_the_sha256(dataset_path, tmp_path):
    target = tmp_path / "data" / "churn.csv"
    assert download_data(target, url=dataset_path.as_uri()) == target
    assert file_sha256(target) == DATA_SHA256

    wrong = tmp_path / "wrong.csv"
    wrong.write_text("customerID\n1\n")
    with pytest.raises(DataError, match="sha256"):
        download_data(wrong)


def test_the_dataset_is_looked_for_in_churn_data_then_shared_then_data(monkeypatch, tmp_path):
    shared = PROJECT_ROOT.parent / "shared" / "data" / DATA_FILE_NAME
    monkeypatch.delenv("CHURN_DATA", raising=False)
    assert data_candidates() == [shared, DEFAULT_DATA_PATH]
    assert find_data() == next((path for path in (shared, DEFAULT_DATA_PATH) if path.is_file()), None)

    mine = tmp_path / "mine.csv"
    monkeypatch.setenv("CHURN_DATA", str(mine))
    assert data_candidates() == [mine, shared, DEFAULT_DATA_PATH]
    assert find_data() != mine  # not there yet: the next place that has it
    mine.write_text("customerID\n")
    assert find_data() == mine


def test_offline_download_is_one_line_naming_the_places_the_url_and_data(tmp_path):
    target = tmp_path / "data" / "churn.csv"
    url = f"http://127.0.0.1:{free_port()}/churn.csv"  # nothing listens there: as offline as a machine gets
    with pytest.raises(DataError) as caught:
        download_data(target, url=url)
    message = str(caught.value)
    assert "\n" not in message
    assert str(target) in message and url in message and "--data PATH" in message
    assert str(DEFAULT_DATA_PATH) in message  # every place looked in is named
    assert list(target.parent.iterdir()) == []  # no partial file left behind


def test_churn_data_may_name_the_folder_that_holds_the_dataset(dataset_path, tmp_path):
    """The README's reading of $CHURN_DATA: a folder means the dataset under its own name inside it."""
    folder = tmp_path / "my data"
    folder.mkdir()
    (folder / DATA_FILE_NAME).symlink_to(dataset_path)
    for value in (folder, folder / DATA_FILE_NAME):
        found = subprocess.run(
            [sys.executable, "-c", "from churn.model.data import find_data; print(find_data())"],
            cwd=PROJECT_ROOT,
            env={**os.environ, "CHURN_DATA": str(value)},
            capture_output=True,
            text=True,
            check=True,
        )
        assert found.stdout.strip() == str(folder / DATA_FILE_NAME)
