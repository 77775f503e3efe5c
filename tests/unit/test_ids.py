import time
import uuid

import numpy as np
import pytest

from churn.monitor.ids import FEW, octets, texts, uuid7s


@pytest.mark.parametrize("n", [1, FEW, FEW + 1, 5000])
def test_prediction_ids_are_uuid7_in_increasing_order_and_now(n):
    before = time.time_ns() // 1_000_000
    ids = uuid7s(n)
    after = time.time_ns() // 1_000_000
    parsed = [uuid.UUID(i) for i in ids]
    assert [str(u) for u in parsed] == ids  # the canonical text
    assert {u.version for u in parsed} == {7} and {u.variant for u in parsed} == {uuid.RFC_4122}
    assert ids == sorted(ids) and len(set(ids)) == n
    # 4,096 ids a millisecond at most: a larger batch borrows the milliseconds after it.
    assert before <= parsed[0].int >> 80 <= parsed[-1].int >> 80 <= after + n // 4096 + 1


def test_ids_of_successive_calls_keep_increasing():
    ids = [i for _ in range(200) for i in uuid7s(3)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


@pytest.mark.parametrize("n", [0, 1, 1000])
def test_ids_as_octets_are_their_uuids_bytes_and_come_back_as_the_same_text(n):
    ids = uuid7s(n) if n else []
    packed = octets(ids)
    assert packed == b"".join(uuid.UUID(i).bytes for i in ids)
    assert texts(np.frombuffer(packed, np.uint8).reshape(-1, 16)) == ids
