"""Merge several partitions into one event-time order, whatever the broker's batching.

Each partition's records stay in offset order; across partitions the smallest key
``(ts, 0 for a label / 1 for an event, seq)`` goes first. A record may only go when every
other assigned partition has something buffered, or is empty for a reason that lets it be
skipped. As in Kafka Streams, what decides is the partition's lag at the broker:

- lag unknown (not fetched yet) or above zero: its records exist and are on their way, so the
  merge waits for them (up to ``stall_ms``, a safety valve against a partition that never
  delivers). With all data in the broker, the order is therefore the same however the fetches
  are batched or delayed.
- lag zero (caught up): producers may still add an earlier record, so the merge waits up to
  ``max_idle_ms`` from the moment the partition ran empty, then skips it.

>>> now = [0.0]
>>> merge = OrderedMerge(max_idle_ms=100, clock=lambda: now[0])
>>> merge.assign(["events", "labels"])
>>> merge.push("events", [Item((2.0, 1, 1), "events", 0, "e2")])
>>> merge.pop() is None  # "labels" was never fetched: it may hold something earlier
True
>>> merge.push("labels", [Item((2.0, 0, 0), "labels", 0, "l0")])
>>> merge.set_lag("labels", 0)
>>> merge.pop().payload
'l0'
>>> merge.pop() is None  # "labels" is empty and caught up: producers get max_idle_ms
True
>>> now[0] = 0.2
>>> merge.pop().payload
'e2'
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Any

SortKey = tuple[float, int, int]
LABEL_RANK = 0
EVENT_RANK = 1
PREDICTION_RANK = 2  # a published prediction carries its event's time: right after it


class Item:
    """A record waiting in the merge: its sort key, partition, offset and what it carries.

    A plain class with slots (one is built per record; a frozen dataclass's ``__init__`` costs
    an ``object.__setattr__`` per field).
    """

    __slots__ = ("key", "offset", "partition", "payload")

    def __init__(self, key: SortKey, partition: Hashable, offset: int, payload: Any) -> None:
        self.key = key
        self.partition = partition
        self.offset = offset
        self.payload = payload

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Item):
            return NotImplemented
        return (self.key, self.partition, self.offset, self.payload) == (
            other.key,
            other.partition,
            other.offset,
            other.payload,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Item({self.key!r}, {self.partition!r}, {self.offset!r}, {self.payload!r})"


class OrderedMerge:
    def __init__(
        self,
        max_idle_ms: int,
        clock: Callable[[], float] = time.monotonic,
        stall_ms: int = 30_000,
        never_wait: Callable[[Hashable], bool] | None = None,
    ) -> None:
        self.max_idle = max_idle_ms / 1000.0
        # Partitions whose records need no order against the others (a learner's predictions:
        # joined by id whenever they come): an empty one never holds the merge back.
        self.never_wait = never_wait or (lambda _partition: False)
        self.stall = stall_ms / 1000.0
        self.clock = clock
        self.buffers: dict[Hashable, deque[Item]] = {}
        self.heap: list[tuple[SortKey, int, Hashable]] = []
        self.order: dict[Hashable, int] = {}  # stable tie-break between partitions
        self.empty_since: dict[Hashable, float] = {}
        self.lag: dict[Hashable, int | None] = {}

    def assign(self, partitions: Iterable[Hashable]) -> None:
        now = self.clock()
        for partition in partitions:
            if partition not in self.buffers:
                self.buffers[partition] = deque()
                self.order[partition] = len(self.order)
                if not self.never_wait(partition):
                    self.empty_since[partition] = now

    def revoke(self, partitions: Iterable[Hashable]) -> None:
        """Forget partitions and their buffered records (they will be fetched again)."""
        gone = set(partitions)
        for partition in gone:
            self.buffers.pop(partition, None)
            self.empty_since.pop(partition, None)
            self.lag.pop(partition, None)
        self.heap = [entry for entry in self.heap if entry[2] not in gone]
        heapq.heapify(self.heap)

    def push(self, partition: Hashable, items: Iterable[Item]) -> None:
        buffer = self.buffers[partition]
        was_empty = not buffer
        buffer.extend(items)
        if was_empty and buffer:
            self.empty_since.pop(partition, None)
            heapq.heappush(self.heap, (buffer[0].key, self.order[partition], partition))

    def set_lag(self, partition: Hashable, lag: int | None) -> None:
        """Records the broker holds beyond what was fetched; None while unknown."""
        self.lag[partition] = lag

    def _blocked(self) -> bool:
        if not self.empty_since:
            return False
        now = self.clock()
        for partition, since in self.empty_since.items():
            waited = now - since
            limit = self.max_idle if self.lag.get(partition) == 0 else self.stall
            if waited < limit:
                return True
        return False

    def pop(self) -> Item | None:
        """The next record in order, or None if nothing may go yet."""
        heap = self.heap
        if not heap or (self.empty_since and self._blocked()):
            return None
        _, rank, partition = heap[0]
        buffer = self.buffers[partition]
        item = buffer.popleft()
        if buffer:
            # One sift instead of a pop and a push: the entries are all different (one per
            # partition), so the heap gives them in the same order whatever its layout.
            heapq.heapreplace(heap, (buffer[0].key, rank, partition))
        else:
            heapq.heappop(heap)
            if not self.never_wait(partition):
                self.empty_since[partition] = self.clock()
        return item

    def __len__(self) -> int:
        return sum(len(b) for b in self.buffers.values())
