"""A bounded memory of event ids seen, so a duplicate is caught long after the join's TTL.

The join buffer knows the ids of events waiting for labels and of those joined within the TTL,
exactly; beyond it an id would be new again. This remembers more, in bounded space: two Bloom
filters, the current one and the one before it, each holding up to ``capacity`` ids. Once the
current one is full it becomes the previous one and a new one starts, so any id among the last
``capacity`` ids added (and up to ``2 * capacity``) is always found: no false negatives there.
A Bloom filter can say "seen" for an id it never saw (a false positive): sized so that a full
filter does so with probability ``error_rate``; with two filters looked at, at most twice that,
and about ``error_rate`` on average.

Blocked (as RocksDB's): an id's 16 bits all fall in one 512-bit block (a cache line), read and
written as one Python int, its mask built in C from a table of bits. A plain Bloom filter's 16
scattered bits cost 16 memory misses and Python steps per event (measured 5-90 us here, on a
loaded machine), this one one miss and a few steps. It takes more bits for the same rate: ~40
per id at 1e-6 (5 MB per filter for a million ids), in every checkpoint too.

Hashes are BLAKE2b, not Python's ``hash`` (salted per process): a filter restored from a
checkpoint must find the ids the process before it added.

>>> seen = SeenIds(capacity=1000, error_rate=1e-6)
>>> seen.check_and_add("a"), seen.check_and_add("a"), "a" in seen, "b" in seen
(False, True, True, False)
"""

from __future__ import annotations

import functools
import math
import struct
from functools import reduce
from hashlib import blake2b
from operator import or_
from typing import Final

_BLOCK_BITS: Final = 512
_BLOCK_BYTES: Final = _BLOCK_BITS // 8
_HASHES: Final = 16  # bits an id sets in its block
# A digest: the block (8 bytes), then 16 two-byte words, one bit position each.
_BLOCK_OF: Final = struct.Struct("<Q").unpack_from
_WORDS: Final = struct.Struct(f"<{_HASHES}H").unpack_from
# Each word's bit, looked up: 65,536 references to 512 ints (the mask is built in C, by
# ``reduce(or_, map(...))``, not by 16 Python shifts).
_ONE_BIT: Final = [1 << i for i in range(_BLOCK_BITS)]
_BIT_OF: Final = [_ONE_BIT[word % _BLOCK_BITS] for word in range(1 << 16)]


def _distinct() -> list[float]:
    """The chance that 16 positions drawn from 512 are d distinct ones, for each d."""
    distinct = [1.0] + [0.0] * _HASHES
    for _ in range(_HASHES):
        step = [0.0] * (_HASHES + 1)
        for d, p in enumerate(distinct):
            if p:
                step[d] += p * d / _BLOCK_BITS
                if d < _HASHES:
                    step[d + 1] += p * (_BLOCK_BITS - d) / _BLOCK_BITS
        distinct = step
    return distinct


_DISTINCT: Final = _distinct()


def _false_positive_rate(ids_per_block: float) -> float:
    """A full filter's: a block holds a Poisson number of ids; a query's 16 positions may
    coincide (fewer bits to find set), counted exactly."""
    rate, poisson = 0.0, math.exp(-ids_per_block)
    # Terms past the mean by 12 standard deviations add nothing a rate of 1e-12 would see.
    for ids in range(int(ids_per_block + 12 * math.sqrt(ids_per_block) + 30)):
        if ids:
            poisson *= ids_per_block / ids
        filled = 1.0 - (1.0 - 1.0 / _BLOCK_BITS) ** (_HASHES * ids)
        rate += poisson * sum(p * filled**d for d, p in enumerate(_DISTINCT))
    return rate


@functools.lru_cache(maxsize=16)
def _blocks(capacity: int, error_rate: float) -> int:
    """Blocks for ``capacity`` ids at ``error_rate`` when full (worked out once per setting).

    >>> round(_blocks(1_000_000, 1e-6) * 512 / 1_000_000, 1)  # bits per id
    39.6
    """
    low, high = 1e-3, float(_BLOCK_BITS)  # ids per block: the most that keeps the rate
    for _ in range(40):
        middle = (low + high) / 2
        if _false_positive_rate(middle) > error_rate:
            high = middle
        else:
            low = middle
    return max(1, math.ceil(capacity / low))


class SeenIds:
    """Event ids seen (see the module): :meth:`check_and_add` on every event."""

    def __init__(self, capacity: int, error_rate: float) -> None:
        self.capacity = capacity
        self.error_rate = error_rate
        self.blocks = _blocks(capacity, error_rate)
        self.current = bytearray(self.blocks * _BLOCK_BYTES)
        self.previous: bytearray | None = None
        self.count = 0  # ids added to ``current``

    def _where(self, event_id: str) -> tuple[int, int]:
        """The byte offset of the id's block, and its mask there."""
        digest = blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=40).digest()
        mask = reduce(or_, map(_BIT_OF.__getitem__, _WORDS(digest, 8)))
        return (_BLOCK_OF(digest)[0] % self.blocks) * _BLOCK_BYTES, mask

    def __contains__(self, event_id: str) -> bool:
        offset, mask = self._where(event_id)
        end = offset + _BLOCK_BYTES
        if int.from_bytes(self.current[offset:end], "little") & mask == mask:
            return True
        previous = self.previous
        return previous is not None and (
            int.from_bytes(previous[offset:end], "little") & mask == mask
        )

    def check_and_add(self, event_id: str) -> bool:
        """Whether ``event_id`` was seen before (maybe: see the module); it is seen now."""
        offset, mask = self._where(event_id)
        end = offset + _BLOCK_BYTES
        current = self.current
        block = int.from_bytes(current[offset:end], "little")
        if block & mask == mask:
            return True
        current[offset:end] = (block | mask).to_bytes(_BLOCK_BYTES, "little")
        # New to ``current`` (which now keeps it remembered for another generation).
        previous = self.previous
        seen = previous is not None and (
            int.from_bytes(previous[offset:end], "little") & mask == mask
        )
        self.count += 1
        if self.count >= self.capacity:
            self.previous, self.current = current, bytearray(len(current))
            self.count = 0
        return seen
