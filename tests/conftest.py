import os
from pathlib import Path

import pytest

from churn.data import DATA_FILE_NAME, load_data
from churn.scoring import load_served_model
from churn.service import Settings, create_app

ROOT = Path(__file__).resolve().parent.parent
MODEL_FILE = ROOT / "model_C=1.0.bin"


def data_path() -> Path:
    """The real dataset: $CHURN_DATA, else ../shared/data beside the clone, else data/."""
    candidates = [
        os.environ.get("CHURN_DATA"),
        ROOT.parent / "shared" / "data" / DATA_FILE_NAME,
        ROOT / "data" / DATA_FILE_NAME,
    ]
    for candidate in filter(None, candidates):
        if Path(candidate).exists():
            return Path(candidate)
    pytest.fail(f"the dataset {DATA_FILE_NAME} is not in $CHURN_DATA, ../shared/data or data/")


@pytest.fixture(scope="session")
def dataset_path() -> Path:
    return data_path()


@pytest.fixture(scope="session")
def raw_df(dataset_path):
    import pandas as pd

    return pd.read_csv(dataset_path)


@pytest.fixture(scope="session")
def clean_df(dataset_path):
    return load_data(dataset_path)


@pytest.fixture(scope="session")
def served_model():
    return load_served_model(MODEL_FILE)


@pytest.fixture
def settings():
    return Settings()


@pytest.fixture
def app(served_model, settings):
    app = create_app(served_model, settings)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app):
    return app.test_client()
