"""The prediction log's packs: what a pack unpacks into is, customer by customer, what each answer said, and a
store unpacks each customer once, whatever the schema it started from and however often a pack was written."""

import sqlite3

import numpy as np
import pytest

import monitor
from churn.model.schema import FEATURES, ID_COLUMN
from churn.model.scoring import canonical_values, columns_of
from churn.monitor import packed
from churn.monitor.ids import uuid7s
from churn.monitor.store import MIGRATIONS, PREDICTION_COLUMNS, SQLITE, Store, StoreError
from churn.serve.endpoint import Answer
from tests.helpers import customers

THRESHOLD = 0.5


def answer(endpoint: str, people: list[dict], batch: bool, challenger: bool) -> packed.Queued:
    """A queued answer as PredictionLog.put keeps it: a batch with its scorer's columns, one customer without."""
    probabilities = np.random.default_rng(len(people)).random(len(people)).tolist()
    shadow = [p / 2 for p in probabilities] if challenger else None
    columns = columns_of(people) if batch else None
    return packed.queued(endpoint, Answer(b"", probabilities, uuid7s(len(people)), people, shadow, columns))


def mixed_answers() -> list[tuple[packed.Queued, list[dict]]]:
    """A batch in the dataset's spelling with customer ids, single customers between, one with a challenger."""
    spelled = customers(5)
    spelled[0] = spelled[0] | {"contract": "Month-to-month", ID_COLUMN: "7590-VHVEG"}
    spelled[1] = spelled[1] | {ID_COLUMN: 42}
    spelled[2] = spelled[2] | {ID_COLUMN: "a\x00b"}  # logged as a\ufffdb: PostgreSQL's text holds no NUL
    sent = [("predict", customers(1), False, False), ("predict", spelled, True, True)]
    sent += [("explain", customers(3)[2:], False, True), ("explain", customers(2), True, False)]
    return [(answer(*what), what[1]) for what in sent]


def expected_rows(answers: list[tuple[packed.Queued, list[dict]]], store: Store) -> dict[str, tuple]:
    """Each customer's row, in PREDICTION_COLUMNS' order, from what its answer said."""
    spellings = canonical_values()
    rows = {}
    for (endpoint, unix_time, ids, probabilities, shadow, *_), people in answers:
        for i, customer in enumerate(people):
            features = [spellings[f.name][customer[f.name]] if f.values else customer[f.name] for f in FEATURES]
            sent = customer.get(ID_COLUMN)
            logged_id = None if sent is None else str(sent).replace("\x00", "\ufffd")
            row = (ids[i], store.time_value(unix_time), "v1", endpoint, logged_id)
            decision = probabilities[i] >= THRESHOLD
            rows[ids[i]] = (*row, *features, probabilities[i], decision, shadow and shadow[i])
    return rows


def test_a_pack_unpacks_into_what_each_answer_said(tmp_path):
    answers = mixed_answers()
    store = Store(f"sqlite:///{tmp_path / 'log.db'}")
    unpacked = packed.unpack(packed.pack([q for q, _ in answers], "v1", THRESHOLD), store.time_value)
    expected = expected_rows(answers, store)
    assert {row[0]: row for row in unpacked} == expected
    for row in unpacked:  # the types too: whole numbers stay whole, probabilities keep every bit
        assert [type(value) for value in row] == [type(value) for value in expected[row[0]]]
    assert len(PREDICTION_COLUMNS) == len(unpacked[0])


def test_a_store_unpacks_each_customer_once_however_often_its_pack_was_written(tmp_path):
    answers = mixed_answers()
    store = Store(f"sqlite:///{tmp_path / 'log.db'}")
    pack = packed.pack([q for q, _ in answers], "v1", THRESHOLD)
    for _ in range(2):  # a retry after a commit whose answer was lost
        store.write_packed(pack)
    assert store.unpack() == 2 * sum(len(people) for _, people in answers)  # both read; the second's rows were there
    rows = store.query(f"SELECT {', '.join(PREDICTION_COLUMNS)} FROM predictions")
    assert {row[0]: tuple(row) for row in rows} == expected_rows(answers, store)
    assert store.query("SELECT count(*) FROM packed_predictions") == [(0,)]
    assert store.unpack() == 0


def test_a_log_made_by_the_first_schema_is_upgraded_and_keeps_its_rows(tmp_path):
    path = tmp_path / "log.db"
    with sqlite3.connect(path) as connection:  # the store as the first version of the service left it
        connection.execute("CREATE TABLE schema_version (version integer NOT NULL)")
        for statement in MIGRATIONS[SQLITE][0]:
            connection.execute(statement)
        connection.execute("INSERT INTO schema_version VALUES (1)")
    old = Store(f"sqlite:///{path}")
    [(version,)] = old.query("SELECT max(version) FROM schema_version")
    assert version == len(MIGRATIONS[SQLITE]) > 1
    answers = mixed_answers()
    old.write_packed(packed.pack([q for q, _ in answers], "v1", THRESHOLD))
    assert old.unpack() == sum(len(people) for _, people in answers)


@pytest.mark.parametrize("vocabulary", [packed.VOCABULARIES[f.name] for f in FEATURES if f.values])
def test_every_code_means_a_spelling_of_the_model(vocabulary):
    assert set(vocabulary) <= {value for values in canonical_values().values() for value in values.values()}
    assert len(vocabulary) <= np.iinfo(packed.CODE_TYPE).max + 1


def test_a_damaged_pack_is_named_and_nothing_is_lost(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'log.db'}")
    pack = packed.pack([q for q, _ in mixed_answers()], "v1", THRESHOLD)
    store.write_packed(pack)
    store.write_packed((*pack[:6], pack[6][:-1]))  # its data cut short by a byte
    with pytest.raises(StoreError, match=r"pack 2 of packed_predictions cannot be unpacked \(ValueError: "):
        store.unpack()
    assert store.query("SELECT count(*) FROM packed_predictions") == [(2,)]  # both kept for a repair
    assert store.query("SELECT count(*) FROM predictions") == [(0,)]


def test_monitor_py_unpack_says_how_many_customers_it_unpacked(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    store = Store(url)
    answers = mixed_answers()
    customers_sent = sum(len(people) for _, people in answers)
    store.write_packed(packed.pack([q for q, _ in answers], "v1", THRESHOLD))
    assert monitor.main(["unpack", "--log", url]) == 0
    assert capsys.readouterr().out == f"{customers_sent} customers unpacked into predictions\n"
    assert store.query("SELECT count(*) FROM predictions") == [(customers_sent,)]
