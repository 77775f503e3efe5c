"""Load and clean the IBM Telco churn CSV: the one cleaning rule that training and serving share."""

import hashlib
import urllib.request
from pathlib import Path

from churn.settings import Settings

DATA_FILE_NAME = "WA_Fn-UseC_-Telco-Customer-Churn.csv"
DATA_URL = (
    "https://raw.githubusercontent.com/alexeygrigorev/mlbookcamp-code/master/"
    f"chapter-03-churn-prediction/{DATA_FILE_NAME}"
)
DATA_SHA256 = "88be4b93fbe0cc83421af1c503794c97c342eca914c1576db7c276e61d61358a"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_PATH = PROJECT_ROOT / "data" / DATA_FILE_NAME
TARGET = "churn"


class DataError(ValueError):
    """The dataset is not to be had, or is not the known file; the message says where it was looked for."""


def data_candidates() -> list[Path]:
    """Where the dataset is looked for, in order: $CHURN_DATA, ../shared/data beside the clone, data/.

    $CHURN_DATA names the CSV itself or a folder that holds it under its own name (DATA_FILE_NAME).
    """
    env = Settings.one_from_env("data")
    mine = [env / DATA_FILE_NAME if env.is_dir() else env] if env else []
    shared = PROJECT_ROOT.parent / "shared" / "data" / DATA_FILE_NAME
    return [*mine, shared, DEFAULT_DATA_PATH]


def find_data() -> Path | None:
    """The first of data_candidates() that exists: the one search that train.py and the tests share."""
    return next((path for path in data_candidates() if path.is_file()), None)


def clean_text(text: str) -> str:
    """The dataset's spelling to the model's: 'Fiber optic' -> 'fiber_optic', 'MonthlyCharges' -> 'monthlycharges'."""
    return text.lower().replace(" ", "_")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_data(path: Path = DEFAULT_DATA_PATH, url: str = DATA_URL) -> Path:
    """Fetch the CSV to `path` unless it is there, and refuse a file whose sha256 is not the known one.

    Raises DataError with one line for a person (where the file is expected, the URL, --data) when offline.
    """
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        try:
            urllib.request.urlretrieve(url, partial)
        except OSError as e:  # URLError, HTTPError, a refused or reset connection, a full disk
            partial.unlink(missing_ok=True)
            reason = getattr(e, "reason", None) or e.strerror or e
            looked = ", ".join(str(candidate) for candidate in data_candidates())
            raise DataError(
                f"the dataset is not in {looked}, and downloading it from {url} to {path} failed ({reason}): "
                f"put it at {path}, set $CHURN_DATA, or pass --data PATH"
            ) from None
        partial.replace(path)
    actual = file_sha256(path)
    if actual != DATA_SHA256:
        raise DataError(f"{path}: sha256 {actual} is not the dataset's {DATA_SHA256}")
    return path


def clean_frame(df):
    """Column names and text values cleaned with clean_text, blank totalcharges as 0, churn yes -> 1.

    Text columns are found with is_string_dtype, which holds for pandas 2's object columns and pandas 3's
    str dtype alike (selecting dtype 'object' finds nothing under pandas 3).
    """
    import pandas as pd  # here, not at the top: the service uses clean_text alone and starts without pandas

    df = df.rename(columns=clean_text)
    df["totalcharges"] = pd.to_numeric(df["totalcharges"], errors="coerce").fillna(0)
    for column in df.columns:
        if pd.api.types.is_string_dtype(df[column]):
            df[column] = df[column].map(clean_text, na_action="ignore")
    if TARGET in df.columns:
        df[TARGET] = (df[TARGET] == "yes").astype(int)
    return df


def load_data(path: Path = DEFAULT_DATA_PATH):
    import pandas as pd

    return clean_frame(pd.read_csv(path))
