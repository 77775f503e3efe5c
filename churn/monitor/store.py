"""The prediction log's store: SQLite (one machine) or PostgreSQL (RDS), its schema, and the SQL both speak.

A Store is one connection. The schema is created and upgraded when a connection opens, idempotently: the version
table says which MIGRATIONS have run, and one lock (SQLite's write lock, PostgreSQL's advisory lock) keeps workers
that start together from running one twice. psycopg is imported only for a postgresql:// URL.
"""

import contextlib
import datetime
import sqlite3
from collections.abc import Iterable

from churn.model.schema import FEATURES

SQLITE, POSTGRESQL = "sqlite:///", "postgresql://"
SCHEMA_LOCK = 2_105_021  # PostgreSQL advisory lock key: any number no other program on the database uses
FEATURE_NAMES = [f.name for f in FEATURES]
PREDICTION_COLUMNS = [
    "prediction_id",
    "predicted_at",
    "model_version",
    "endpoint",
    "customer_id",
    *FEATURE_NAMES,
    "probability",
    "decision",
    "challenger_probability",
]
OUTCOME_COLUMNS = ["prediction_id", "customer_id", "churned", "observed_at", "loaded_at"]


def _feature_type(feature, text: str, whole: str, number: str) -> str:
    return text if feature.categorical else whole if feature.integer else number


def _predictions_table(uuid: str, time: str, text: str, whole: str, number: str, boolean: str) -> str:
    features = ", ".join(f"{f.name} {_feature_type(f, text, whole, number)} NOT NULL" for f in FEATURES)
    return (
        f"CREATE TABLE predictions (prediction_id {uuid} PRIMARY KEY, predicted_at {time} NOT NULL, "
        f"model_version {text} NOT NULL, endpoint {text} NOT NULL, customer_id {text}, {features}, "
        f"probability {number} NOT NULL, decision {boolean} NOT NULL, challenger_probability {number})"
    )


# Per dialect, each version's statements, in order. A new version is appended, never an old one edited.
MIGRATIONS = {
    SQLITE: [
        [
            _predictions_table("TEXT", "TEXT", "TEXT", "INTEGER", "REAL", "INTEGER"),
            "CREATE INDEX predictions_by_customer ON predictions (customer_id, predicted_at)",
            "CREATE TABLE outcomes (outcome_id INTEGER PRIMARY KEY, prediction_id TEXT, customer_id TEXT, "
            "churned INTEGER NOT NULL, observed_at TEXT NOT NULL, loaded_at TEXT NOT NULL)",
        ]
    ],
    POSTGRESQL: [
        [
            _predictions_table("uuid", "timestamptz", "text", "integer", "double precision", "boolean"),
            "CREATE INDEX predictions_by_customer ON predictions (customer_id, predicted_at)",
            "CREATE TABLE outcomes (outcome_id bigserial PRIMARY KEY, prediction_id uuid, customer_id text, "
            "churned boolean NOT NULL, observed_at date NOT NULL, loaded_at timestamptz NOT NULL)",
        ]
    ],
}
SCHEMA_VERSION = len(MIGRATIONS[SQLITE])
# The prediction an outcome is about: its own id, else the customer's latest prediction made on or before the day it
# was observed (a churn observed today can follow this morning's prediction).
_PREDICTED_DAY = {SQLITE: "substr(p.predicted_at, 1, 10)", POSTGRESQL: "(p.predicted_at AT TIME ZONE 'UTC')::date"}
MATCHED_PREDICTION = """COALESCE(o.prediction_id, (
    SELECT p.prediction_id FROM predictions p
    WHERE p.customer_id = o.customer_id AND {day} <= o.observed_at
    ORDER BY p.predicted_at DESC, p.prediction_id DESC LIMIT 1))"""


class StoreError(Exception):
    """The store cannot be reached or written; the message never holds the URL (it may hold a password)."""


def dialect(url: str) -> str:
    return SQLITE if url.startswith(SQLITE) else POSTGRESQL


class Store:
    """One connection to the log's store, its schema current."""

    def __init__(self, url: str, timeout: float = 5.0):
        self.dialect = dialect(url)
        try:
            if self.dialect == SQLITE:
                self.connection = sqlite3.connect(url.removeprefix(SQLITE), timeout=timeout, check_same_thread=False)
                # WAL: the workers' writers and a reader (the report) do not block one another.
                self.connection.execute("PRAGMA journal_mode=WAL")
                self.connection.execute("PRAGMA synchronous=NORMAL")
            else:
                import psycopg

                self.connection = psycopg.connect(url, connect_timeout=max(1, round(timeout)))
                self.connection.execute("SET TIME ZONE 'UTC'")
            self.upgrade()
        except Exception as e:  # sqlite3.Error, psycopg.Error, OSError: the store is not usable now
            raise StoreError(describe(e)) from None

    def upgrade(self) -> None:
        """Run the migrations this store has not had, under a lock; nothing when it is current."""
        execute = self.connection.execute
        if self.dialect == SQLITE:
            execute("BEGIN IMMEDIATE")
        else:
            execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        current = execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0
        for version, statements in enumerate(MIGRATIONS[self.dialect][current:], current + 1):
            for statement in statements:
                execute(statement)
            execute(f"INSERT INTO schema_version VALUES ({version})")
        self.connection.commit()

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken connection: nothing more to lose
            self.connection.close()

    def rollback(self) -> None:
        with contextlib.suppress(Exception):  # a connection the server dropped has nothing to roll back
            self.connection.rollback()

    def time_value(self, unix_time: float):
        """A time as this store keeps it: SQLite as ISO text in UTC (it sorts as time does), PostgreSQL a datetime."""
        moment = datetime.datetime.fromtimestamp(unix_time, datetime.UTC)
        return moment if self.dialect == POSTGRESQL else moment.isoformat(timespec="microseconds")

    def write_predictions(self, rows: list[tuple]) -> None:
        """Rows in PREDICTION_COLUMNS' order, in one transaction. A row already there (a batch retried after a
        commit whose answer was lost) is kept as it is."""
        if self.dialect == SQLITE:
            self.insert("predictions", PREDICTION_COLUMNS, rows, "OR IGNORE", ready=True)
        else:
            self.copy_predictions(rows)

    def copy_predictions(self, rows: list[tuple]) -> None:
        """COPY, PostgreSQL's fastest load; a row already there fails it, and the batch is inserted instead."""
        import psycopg

        try:
            with self.connection.cursor() as cursor:
                with cursor.copy(f"COPY predictions ({', '.join(PREDICTION_COLUMNS)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            self.connection.commit()
        except psycopg.errors.UniqueViolation:
            self.rollback()
            self.insert("predictions", PREDICTION_COLUMNS, rows, conflict="ON CONFLICT DO NOTHING")
        except Exception as e:
            self.rollback()
            raise StoreError(describe(e)) from None

    def insert(self, table, columns, rows, sqlite_or: str = "", conflict: str = "", ready: bool = False) -> None:
        """Rows in one transaction (executemany: psycopg sends them pipelined). SQLite's times and days are made
        ISO text here unless the rows are ready (their times made with time_value)."""
        if self.dialect == SQLITE and not ready:
            rows = [tuple(map(sqlite_value, row)) for row in rows]
        marks = ", ".join(["?" if self.dialect == SQLITE else "%s"] * len(columns))
        sql = f"INSERT {sqlite_or} INTO {table} ({', '.join(columns)}) VALUES ({marks}) {conflict}"
        try:
            with contextlib.closing(self.connection.cursor()) as cursor:
                cursor.executemany(sql, rows)
            self.connection.commit()
        except Exception as e:
            self.rollback()
            raise StoreError(describe(e)) from None

    def query(self, sql: str, parameters: Iterable = ()) -> list[tuple]:
        """A read, with ? placeholders and {day} (the day of a prediction p) in either dialect."""
        sql = sql.format(day=_PREDICTED_DAY[self.dialect])
        if self.dialect == POSTGRESQL:
            sql = sql.replace("?", "%s")
        else:
            parameters = [sqlite_value(p) for p in parameters]
        try:
            rows = self.connection.execute(sql, tuple(parameters)).fetchall()
            self.connection.commit()
            return rows
        except Exception as e:
            self.rollback()
            raise StoreError(describe(e)) from None


def sqlite_value(value):
    """SQLite keeps times and days as ISO text (UTC), which sorts as they do; Python's default adapters for them
    are deprecated."""
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.UTC).isoformat(timespec="microseconds")
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


def describe(e: Exception) -> str:
    """An error in a line, without the URL."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"
