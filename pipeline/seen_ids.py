"""A bounded memory of event ids seen, so a duplicate is caught long after the join's TTL.

The join buffer knows the ids of events waiting for labels and of those joined within the TTL,
exactly; beyond it an id would be new again. This remembers more, in bounded space: two Bloom
filters, the current one and the one before it, each holding up to ``capacity`` ids. Once the
current one is full it becomes the previous one and a new one starts, so any id among the last
``capacity`` ids added (and up to ``2 * capacity``) is always found: no false negatives there.
A Bloom filter can say "seen" for an id it never saw (a false positive): sized so that a full
filter does so with probability ``error_rate``; with two filters looked at, at most twice that,
and about ``error_rate`` on average. Memory: about ``-ln(error_rate) / ln(2)^2`` bits per id per
filter (with the hash count capped at 8: ~41 bits for 1e-6), in every checkpoint too.

Hashes are BLAKE2b, not Python's ``hash`` (salted per process): a filter restored from a
checkpoint must find the ids the process before it added.

>>> seen = SeenIds(capacity=1000, error_rate=1e-6)
>>> seen.check_and_add("a"), seen.check_and_add("a"), "a" in seen, "b" in seen
(False, True, True, False)
"""

from __future__ import annotations

import math
import struct
from hashlib import blake2b
from typing import Final

# Positions from one 32-byte digest, four bytes each. Each costs a Python step per event (8:
# about 2 us an event here), so past 8 the filter takes more bits instead.
_MAX_HASHES: Final = 8
_UNPACK: Final = {k: struct.Struct(f"<{k}I").unpack for k in range(1, _MAX_HASHES + 1)}


def _shape(capacity: int, error_rate: float) -> tuple[int, int]:
    """Bits and hash count for ``capacity`` ids at ``error_rate`` when full.

    >>> _shape(1_000_000, 1e-6)
    (40856853, 8)
    """
    hashes = max(1, min(_MAX_HASHES, math.ceil(-math.log2(error_rate))))
    # The false-positive rate of a full filter is (1 - e^(-k n / m))^k: solved for m.
    bits_per_id = -hashes / math.log(1.0 - error_rate ** (1.0 / hashes))
    return max(8, math.ceil(capacity * bits_per_id)), hashes


class SeenIds:
    """Event ids seen (see the module): :meth:`check_and_add` on every event."""

    def __init__(self, capacity: int, error_rate: float) -> None:
        self.capacity = capacity
        self.error_rate = error_rate
        self.bits, self.hashes = _shape(capacity, error_rate)
        self.current = bytearray((self.bits + 7) // 8)
        self.previous: bytearray | None = None
        self.count = 0  # ids added to ``current``

    def _positions(self, event_id: str) -> list[int]:
        hashes, bits = self.hashes, self.bits
        digest = blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=4 * hashes)
        return [word % bits for word in _UNPACK[hashes](digest.digest())]

    def __contains__(self, event_id: str) -> bool:
        positions = self._positions(event_id)
        return _all_set(self.current, positions) or (
            self.previous is not None and _all_set(self.previous, positions)
        )

    def check_and_add(self, event_id: str) -> bool:
        """Whether ``event_id`` was seen before (maybe: see the module); it is seen now."""
        # _positions and _all_set inlined: this runs on every event.
        hashes, bits, current = self.hashes, self.bits, self.current
        digest = blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=4 * hashes)
        positions = [word % bits for word in _UNPACK[hashes](digest.digest())]
        for position in positions:
            if not current[position >> 3] & (1 << (position & 7)):
                break
        else:
            return True
        for position in positions:
            current[position >> 3] |= 1 << (position & 7)
        # New to ``current`` (which now keeps it remembered for another generation).
        previous = self.previous
        seen = previous is not None and _all_set(previous, positions)
        self.count += 1
        if self.count >= self.capacity:
            self.previous, self.current = current, bytearray(len(current))
            self.count = 0
        return seen


def _all_set(bits: bytearray, positions: list[int]) -> bool:
    for position in positions:  # noqa: SIM110 (a loop, not all(): no generator per call)
        if not bits[position >> 3] & (1 << (position & 7)):
            return False
    return True
