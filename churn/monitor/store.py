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
from churn.monitor import packed

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
PACKED_COLUMNS = ["model_version", "threshold", "answers", "prediction_ids", "customer_ids", "layout", "data"]
PACKS_AT_ONCE = 20  # packs unpacked in one transaction: up to tens of thousands of customers


def _feature_type(feature, text: str, whole: str, number: str) -> str:
    return text if feature.categorical else whole if feature.integer else number


def _predictions_table(uuid: str, time: str, text: str, whole: str, number: str, boolean: str) -> str:
    features = ", ".join(f"{f.name} {_feature_type(f, text, whole, number)} NOT NULL" for f in FEATURES)
    return (
        f"CREATE TABLE predictions (prediction_id {uuid} PRIMARY KEY, predicted_at {time} NOT NULL, "
        f"model_version {text} NOT NULL, endpoint {text} NOT NULL, customer_id {text}, {features}, "
        f"probability {number} NOT NULL, decision {boolean} NOT NULL, challenger_probability {number})"
    )


def _packed_table(key: str, text: str, number: str, blob: str) -> str:
    return (
        f"CREATE TABLE packed_predictions (pack_id {key} PRIMARY KEY, model_version {text} NOT NULL, "
        f"threshold {number} NOT NULL, answers {text} NOT NULL, prediction_ids {blob} NOT NULL, "
        f"customer_ids {text} NOT NULL, layout {text} NOT NULL, data {blob} NOT NULL)"
    )


# Per dialect, each version's statements, in order. A new version is appended, never an old one edited.
MIGRATIONS = {
    SQLITE: [
        [
            _predictions_table("TEXT", "TEXT", "TEXT", "INTEGER", "REAL", "INTEGER"),
            "CREATE INDEX predictions_by_customer ON predictions (customer_id, predicted_at)",
            "CREATE TABLE outcomes (outcome_id INTEGER PRIMARY KEY, prediction_id TEXT, customer_id TEXT, "
            "churned INTEGER NOT NULL, observed_at TEXT NOT NULL, loaded_at TEXT NOT NULL)",
        ],
        [_packed_table("INTEGER", "TEXT", "REAL", "BLOB")],
    ],
    POSTGRESQL: [
        [
            _predictions_table("uuid", "timestamptz", "text", "integer", "double precision", "boolean"),
            "CREATE INDEX predictions_by_customer ON predictions (customer_id, predicted_at)",
            "CREATE TABLE outcomes (outcome_id bigserial PRIMARY KEY, prediction_id uuid, customer_id text, "
            "churned boolean NOT NULL, observed_at date NOT NULL, loaded_at timestamptz NOT NULL)",
        ],
        [
            _packed_table("bigserial", "text", "double precision", "bytea"),
            # Stored as they are: compressing a pack would cost the server more CPU than writing it.
            "ALTER TABLE packed_predictions ALTER prediction_ids SET STORAGE EXTERNAL, "
            "ALTER customer_ids SET STORAGE EXTERNAL, ALTER data SET STORAGE EXTERNAL",
        ],
    ],
}
SCHEMA_VERSION = len(MIGRATIONS[SQLITE])
# The packs a reader unpacks next, oldest first. PostgreSQL's readers each take packs no other holds, and delete them
# as they take them; SQLite's one writer at a time deletes them after (Store.unpack_some).
TAKE_PACKS = {
    SQLITE: f"SELECT pack_id, {', '.join(PACKED_COLUMNS)} FROM packed_predictions ORDER BY pack_id LIMIT ?",
    POSTGRESQL: "DELETE FROM packed_predictions WHERE pack_id IN (SELECT pack_id FROM packed_predictions "
    f"ORDER BY pack_id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING pack_id, {', '.join(PACKED_COLUMNS)}",
}
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

    def write_packed(self, pack: tuple) -> None:
        """A pack (churn.monitor.packed, in PACKED_COLUMNS' order) in one transaction."""
        self.insert("packed_predictions", PACKED_COLUMNS, [pack], ready=True)

    def unpack(self) -> int:
        """Move every pack into predictions, a row per customer; how many customers the packs held. A customer
        already there (a pack written twice, its first commit's answer lost) is kept as it is."""
        moved = 0
        while (customers := self.unpack_some()) is not None:
            moved += customers
        return moved

    def unpack_some(self) -> int | None:
        """Move the oldest PACKS_AT_ONCE packs in one transaction; their customers, or None when none is left."""
        execute = self.connection.execute
        sql = self.insert_sql("predictions", PREDICTION_COLUMNS, "OR IGNORE", "ON CONFLICT DO NOTHING")
        try:
            if self.dialect == SQLITE:
                execute("BEGIN IMMEDIATE")
            packs = sorted(execute(TAKE_PACKS[self.dialect], (PACKS_AT_ONCE,)).fetchall())
            rows = [row for pack in packs for row in self.unpacked(pack)]
            if self.dialect == POSTGRESQL:
                self.copy_predictions(rows, sql)
            else:
                self.connection.executemany(sql, rows)
            if self.dialect == SQLITE and packs:
                execute("DELETE FROM packed_predictions WHERE pack_id <= ?", (packs[-1][0],))
            self.connection.commit()
        except Exception as e:
            self.rollback()
            raise e if isinstance(e, StoreError) else StoreError(describe(e)) from None
        return len(rows) if packs else None

    def unpacked(self, pack: tuple) -> list[tuple]:
        """A pack's rows; StoreError naming it when it cannot be read (it stays, and so do the packs after it)."""
        try:
            return packed.unpack(pack[1:], self.time_value)
        except Exception as e:  # a pack changed by hand, or cut short: whatever numpy or json says of it
            raise StoreError(f"pack {pack[0]} of packed_predictions cannot be unpacked ({describe(e)})") from None

    def copy_predictions(self, rows: list[tuple], insert_sql: str) -> None:
        """COPY, PostgreSQL's fastest load (a third of inserting), in a savepoint: a row already there fails it, and
        the rows are inserted instead."""
        import psycopg

        with contextlib.closing(self.connection.cursor()) as cursor:
            try:
                with self.connection.transaction():
                    with cursor.copy(f"COPY predictions ({', '.join(PREDICTION_COLUMNS)}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
            except psycopg.errors.UniqueViolation:
                cursor.executemany(insert_sql, rows)

    def insert(self, table: str, columns: list[str], rows: list[tuple], ready: bool = False) -> None:
        """Rows in one transaction (executemany: psycopg sends them pipelined). SQLite's times and days are made
        ISO text here unless the rows are ready (their times made with time_value)."""
        if self.dialect == SQLITE and not ready:
            rows = [tuple(map(sqlite_value, row)) for row in rows]
        try:
            with contextlib.closing(self.connection.cursor()) as cursor:
                cursor.executemany(self.insert_sql(table, columns), rows)
            self.connection.commit()
        except Exception as e:
            self.rollback()
            raise StoreError(describe(e)) from None

    def insert_sql(self, table: str, columns: list[str], sqlite_or: str = "", conflict: str = "") -> str:
        """INSERT of columns, with SQLite's OR clause or PostgreSQL's ON CONFLICT clause."""
        if self.dialect == SQLITE:
            marks, conflict = ", ".join(["?"] * len(columns)), ""
        else:
            marks, sqlite_or = ", ".join(["%s"] * len(columns)), ""
        return f"INSERT {sqlite_or} INTO {table} ({', '.join(columns)}) VALUES ({marks}) {conflict}"

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
