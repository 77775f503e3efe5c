import pandas as pd
import pytest

from churn.data import DATA_SHA256, clean_frame, clean_text, download_data, file_sha256


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
    with pytest.raises(ValueError, match="sha256"):
        download_data(wrong)
