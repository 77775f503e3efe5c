"""Prediction ids: UUIDv7 (RFC 9562), time-ordered, so that the log's primary key grows with time.

Python 3.11's uuid module has no uuid7. Layout: 48 bits of Unix milliseconds, the version (7), 12 bits of a counter
(rand_a, RFC 9562 section 6.2 method 1: ids of one process increase within a millisecond), the variant (0b10) and
62 random bits. The counter's overflow borrows the next millisecond, as the RFC allows, so ids of one process never go
backwards. The random bits are os.urandom's (a CSPRNG, as the RFC asks), drawn 64 KiB at a time: os.urandom releases the
interpreter lock, and in a gthread worker a release in the middle of a request hands the lock to another thread and
back, which cost more than the rest of making the id.
"""

import binascii
import os
import threading
import time

import numpy as np

COUNTER_LIMIT = 1 << 12
RANDOM_POOL_BYTES = 1 << 16  # 8,192 ids' random bits a draw


class IdClock:
    """The last (millisecond, counter) given out by this process, and its unused random bytes."""

    def __init__(self):
        self.lock = threading.Lock()
        self.milliseconds = 0
        self.counter = 0
        # A forked worker draws its own: the parent's bytes would give two workers the same random bits.
        self.pool, self.used = b"", 0
        os.register_at_fork(after_in_child=self.__init__)  # a held lock must not cross a fork

    def take(self, n: int) -> tuple[int, int, bytes]:
        """(millisecond, first counter) for n ids, which use the counters after it, carrying into milliseconds; and
        8 random bytes for each."""
        now = time.time_ns() // 1_000_000
        with self.lock:
            if now > self.milliseconds:
                self.milliseconds, self.counter = now, 0
            start = self.milliseconds * COUNTER_LIMIT + self.counter
            end = start + n
            self.milliseconds, self.counter = divmod(end, COUNTER_LIMIT)
            return *divmod(start, COUNTER_LIMIT), self.random_bytes(8 * n)

    def random_bytes(self, size: int) -> bytes:
        if size > RANDOM_POOL_BYTES:
            return os.urandom(size)
        if self.used + size > len(self.pool):
            self.pool, self.used = os.urandom(RANDOM_POOL_BYTES), 0
        self.used += size
        return self.pool[self.used - size : self.used]


_clock = IdClock()


HEX_DIGITS = np.frombuffer(b"0123456789abcdef", np.uint8)
# Where each of a UUID's 32 hex digits goes in its 36 characters and a separator: 8-4-4-4-12.
DIGIT_COLUMNS = [c for c in range(36) if c not in (8, 13, 18, 23)]
FEW = 16  # up to this many ids, Python's integers cost less than numpy's setup


def high_word(tick: int) -> int:
    """The first 64 bits for a tick (millisecond * COUNTER_LIMIT + counter): milliseconds, version 7, counter."""
    return ((tick >> 12) << 16) | 0x7000 | (tick & 0xFFF)


def uuid7s(n: int) -> list[str]:
    """n UUIDv7 in their canonical text, in increasing order. Many are made as one array of characters: a Python loop
    over 1,000 ids would cost about a millisecond, a fifth of scoring them."""
    milliseconds, counter, randoms = _clock.take(n)
    first = milliseconds * COUNTER_LIMIT + counter
    if n <= FEW:
        words = (
            f"{high_word(first + i):016x}{int.from_bytes(randoms[8 * i : 8 * i + 8]) >> 2 | 1 << 63:016x}"
            for i in range(n)
        )
        return [f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" for h in words]
    ticks = np.arange(first, first + n, dtype=np.uint64)
    words = np.empty((n, 2), ">u8")
    words[:, 0] = high_word(ticks)
    words[:, 1] = np.frombuffer(randoms, np.uint64) >> np.uint64(2) | np.uint64(1 << 63)
    return texts(words.view(np.uint8).reshape(n, 16))


def texts(octets: np.ndarray) -> list[str]:
    """UUIDs given as rows of 16 octets (uint8), in their canonical text."""
    n = len(octets)
    if not n:
        return []
    text = np.full((n, 37), ord("-"), np.uint8)
    text[:, DIGIT_COLUMNS] = HEX_DIGITS[np.stack([octets >> 4, octets & 15], axis=2).reshape(n, 32)]
    text[:, 36] = ord(",")
    return text.tobytes()[:-1].decode("ascii").split(",")


def octets(ids: list[str]) -> bytes:
    """UUIDs given in their canonical text, as 16 octets each, end to end: less than half their text's size. The
    hyphens are deleted from bytes (translate), which costs half what removing them from the text does."""
    return binascii.unhexlify("".join(ids).encode("ascii").translate(None, b"-"))
