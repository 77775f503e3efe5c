import os
import sys
import time
import uuid

import numpy as np
import pytest

from churn.monitor.ids import FEW, RANDOM_POOL_BYTES, octets, texts, uuid7s


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


def random_bits(ids: list[str]) -> list[int]:
    return [uuid.UUID(i).int & (1 << 62) - 1 for i in ids]


@pytest.mark.parametrize("n", [1, RANDOM_POOL_BYTES // 8 + 1])  # from the pool, and straight from os.urandom
def test_random_bits_are_never_repeated_within_a_process(n):
    bits = random_bits([i for _ in range(3) for i in uuid7s(n)] + uuid7s(RANDOM_POOL_BYTES // 8))
    assert len(set(bits)) == len(bits)


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_a_forked_worker_draws_random_bits_of_its_own():
    """Two workers forked from one master, making ids in the same millisecond, must not share the master's pool."""
    uuid7s(1)  # the master's pool is drawn
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.write(write, "".join(uuid7s(50)).encode())
        os._exit(0)
    os.close(write)
    ours = uuid7s(50)
    with os.fdopen(read, "rb") as pipe:
        theirs = pipe.read().decode()
    os.waitpid(child, 0)
    theirs = [theirs[36 * i : 36 * i + 36] for i in range(50)]
    assert not set(random_bits(ours)) & set(random_bits(theirs))
