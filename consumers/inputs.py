"""What a role reads: its consumer-group membership, where each partition starts, the fetch,
and the ordered merge the records leave in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from pipeline.kafka.records import KIND_EVENT, to_items
from pipeline.kafka.transport import Consumer as KafkaConsumer
from pipeline.kafka.transport import GroupStuck, Partition
from pipeline.ordering import Item, OrderedMerge
from pipeline.telemetry import PipelineMetrics
from pipeline.validation import Validator

log = logging.getLogger(__name__)

# Where an assigned partition starts: an offset, its beginning or end, or None to leave it to
# the consumer group (the committed offset, else the reset policy).
Start = int | Literal["beginning", "end"] | None
StartOf = Callable[[Partition], Start]

# A partition the broker holds more records of (lag > 0, or unknown) that fetches have
# returned nothing of for this long is starved: the fetch wait is raised (see
# Consumer.raise_fetch_wait) and a warning names it. Tansu answers a fetch empty once its wait
# ran out before it read the log, and its reads slow down as a partition grows: a 10 ms wait
# fetched nothing, for ever, from a ~33,000-record partition in the soak run (issue 18), while
# 40 ms read it.
STARVED_AFTER_S = 1.0
# The wait is raised up to this (Kafka's own default is 500 ms); once there, a starved partition
# is warned about this often: never a silent stall.
FETCH_WAIT_CAP_MS = 1000
STARVED_WARN_EVERY_S = 30.0


class Inputs:
    """The consumer side of a role: assignment, seeking, fetching and ordering.

    ``start_of`` decides where each assigned partition is read from: a writer (``run``,
    ``learner``) seeks to its Redis offsets; a predictor leaves it to the group's committed
    offsets. Records are parsed and validated on fetch, then released by the merge in the
    order the learning core needs; ``lock`` is the role's state lock, which the rebalance
    callbacks take too.
    """

    def __init__(
        self,
        consumer: KafkaConsumer,
        kinds: dict[str, str],
        validator: Validator,
        merge: OrderedMerge,
        lock: threading.RLock,
        metrics: PipelineMetrics,
        start_of: StartOf,
    ) -> None:
        self.kafka = consumer
        self.kinds = kinds  # topic -> record kind (KIND_EVENT, ...)
        self.validator = validator
        self.merge = merge
        self.lock = lock
        self.metrics = metrics
        self.start_of = start_of
        self.paused = False
        self.lags: dict[Partition, int | None] = {}
        self.records = 0
        self.first_record_at: float | None = None  # monotonic; joining the group is not work
        # Next offset to buffer per partition: a fetch that went stale across a rebalance
        # (revoked, re-assigned, seeked) must not buffer a record twice.
        self.expected: dict[Partition, int | None] = {}
        self._lag_gauges: dict[Partition, Any] = {}  # the lag metric's child per partition
        self.on_assigned_hooks: list[Callable[[list[Partition]], None]] = []
        self.on_revoked_hooks: list[Callable[[list[Partition]], None]] = []
        self.subscribed_at: float | None = None  # monotonic
        self.joined = False  # an assignment came, even an empty one: the group works
        # Per partition with lag > 0 that fetches return nothing of: since when (monotonic).
        self.starved_since: dict[Partition, float] = {}
        # Called under the lock with each fetched run of fresh event records, before the merge
        # may release them (ordering.serve immediate serves them there).
        self.on_fresh_events: Callable[[list[Item]], None] | None = None
        self._starved_warned_at = float("-inf")

    def subscribe(self) -> None:
        self.subscribed_at = time.monotonic()
        self.kafka.subscribe(list(self.kinds), self._on_assigned, self._on_revoked)

    def check_joined(self, now: float, bound_s: float, group: str) -> None:
        """Raise :class:`GroupStuck` if no assignment came within ``bound_s`` of subscribing.

        Only the first join is watched: afterwards a member that loses its partitions in a
        rebalance keeps its old assignment until the next one, and its fetches say nothing
        about the group. ``bound_s`` 0 never raises.
        """
        if self.joined or not bound_s or self.subscribed_at is None:
            return
        if now - self.subscribed_at >= bound_s:
            raise GroupStuck(
                f"consumer group {group!r}: no partitions assigned {bound_s:g}s after joining "
                "(the broker's group coordinator seems stuck in a rebalance; the embedded "
                "broker can be, after a member left mid-rebalance): stopping rather than "
                "waiting for ever; restart it (kafka.join_timeout_seconds sets the bound)"
            )

    # kafka-python 3 calls these on its IO thread, possibly while the main thread drains
    # (confluent-kafka inside poll, on the main thread): they take the state lock, make no
    # blocking consumer call, and never write a checkpoint (with one writer per pipeline there
    # is nobody to hand state to; the next one is taken as usual).

    def _on_assigned(self, assigned: list[Partition]) -> None:
        self.joined = True
        with self.lock:
            self.merge.assign(assigned)
            for partition in assigned:
                start = self.start_of(partition)
                self.expected[partition] = start if isinstance(start, int) else None
                if isinstance(start, int):
                    self.kafka.seek(partition, start)
                elif start == "beginning":
                    self.kafka.seek_to_beginning(partition)
                elif start == "end":
                    self.kafka.seek_to_end(partition)
            if self.paused:
                self.kafka.pause(assigned)
            for hook in self.on_assigned_hooks:
                hook(assigned)
        log.info("assigned %s", sorted(assigned))

    def _on_revoked(self, revoked: list[Partition]) -> None:
        with self.lock:
            gone = list(revoked)
            self.merge.revoke(gone)
            for partition in gone:
                self.expected.pop(partition, None)
            for hook in self.on_revoked_hooks:
                hook(gone)

    def fetch(self, timeout_ms: int = 100) -> int:
        """Poll once, parse what came, and buffer it in the merge; the number buffered."""
        batches = self.kafka.poll(timeout_ms=timeout_ms)
        kinds, validator = self.kinds, self.validator
        parsed = []
        for partition, records in batches.items():
            parsed.append((partition, to_items(records, partition, kinds[partition[0]], validator)))
        # Outside the lock: position() may wait for the IO thread, which may wait for the lock.
        lags = {}
        gauges = self._lag_gauges
        for partition in self.kafka.assignment():
            # Fetch responses carry the high watermark; Tansu answers ListOffsets wrongly.
            lag = self.kafka.lag(partition)
            lags[partition] = lag
            if lag is not None:
                gauge = gauges.get(partition)
                if gauge is None:
                    # The labelled child kept: labels() looks it up under a lock, every fetch.
                    topic, number = partition
                    gauge = gauges[partition] = self.metrics.lag.labels(
                        topic=topic, partition=str(number)
                    )
                gauge.set(lag)
        self.lags = lags
        self._watch_starved({p for p, records in batches.items() if records}, lags)
        count = 0
        on_fresh = self.on_fresh_events
        with self.lock:
            for partition, items in parsed:
                if partition not in self.expected:
                    continue  # revoked since this fetch
                expected = self.expected[partition]
                # A partition's records come in offset order: all are fresh if the first is.
                if expected is None or (items and items[0].offset >= expected):
                    fresh = items
                else:
                    fresh = [i for i in items if i.offset >= expected]
                if fresh:
                    self.expected[partition] = fresh[-1].offset + 1
                    self.merge.push(partition, fresh)
                    count += len(fresh)
                    if on_fresh is not None and kinds[partition[0]] == KIND_EVENT:
                        on_fresh(fresh)
            for partition, lag in lags.items():
                if partition in self.expected:
                    self.merge.set_lag(partition, lag)
        if count and self.first_record_at is None:
            self.first_record_at = time.monotonic()
        self.records += count
        return count

    def _watch_starved(self, fetched: set[Partition], lags: dict[Partition, int | None]) -> None:
        """Raise the fetch wait, and warn, when partitions the broker holds records of have
        fetched nothing for :data:`STARVED_AFTER_S` (see there)."""
        since = self.starved_since
        if self.paused:
            since.clear()  # nothing is fetched on purpose
            return
        now = time.monotonic()
        for partition, lag in lags.items():
            # Unknown lag counts: a fetch answer carries the high watermark, so a partition
            # whose lag stays unknown while it is fetched gets no answer worth the name (Tansu
            # answers a fetch that may not wait at all so).
            if partition in fetched or lag == 0:
                since.pop(partition, None)
            else:
                since.setdefault(partition, now)
        for partition in [p for p in since if p not in lags]:
            del since[partition]  # revoked
        starved = sorted(p for p, t in since.items() if now - t >= STARVED_AFTER_S)
        if not starved:
            return
        waited = max(now - since[p] for p in starved)
        where = ", ".join(
            f"{topic}[{number}] at offset {self._next_offset((topic, number))} ("
            + (
                "end unknown"
                if lags[topic, number] is None
                else f"{lags[topic, number]} records behind"
            )
            + ")"
            for topic, number in starved
        )
        wait_ms = self.kafka.raise_fetch_wait(FETCH_WAIT_CAP_MS)
        if wait_ms is not None:
            log.warning(
                "fetches returned no records for %.0fs from %s although the broker holds more: "
                "raising the fetch wait to %d ms (a broker may answer a fetch empty when the "
                "wait runs out before it read its log; kafka.fetch_max_wait_ms sets the first "
                "wait)",
                waited,
                where,
                wait_ms,
            )
            # The new wait (one for all partitions) gets its own chance, for every partition.
            for partition in since:
                since[partition] = now
        elif now - self._starved_warned_at >= STARVED_WARN_EVERY_S:
            self._starved_warned_at = now
            log.warning(
                "no progress: fetches returned no records for %.0fs from %s although the "
                "broker holds more (fetch wait at its limit, or not adjustable with this "
                "client: raise kafka.fetch_max_wait_ms); check the broker",
                waited,
                where,
            )

    def _next_offset(self, partition: Partition) -> int | str:
        """The next offset to buffer, for messages: where the partition was sought to, or
        what came last; else the consumer group's or reset policy's start."""
        expected = self.expected.get(partition)
        return "its start" if expected is None else expected

    def pop(self) -> Item | None:
        """The next record in order, if the merge may release one (call under the lock)."""
        return self.merge.pop()

    def assignment(self) -> set[Partition]:
        return self.kafka.assignment()

    def pause(self) -> None:
        self.kafka.pause(self.kafka.assignment())
        self.paused = True

    def resume(self) -> None:
        if self.paused:
            self.kafka.resume(self.kafka.assignment())
            self.paused = False

    def commit(self, offsets: dict[Partition, int], wait: bool = False) -> None:
        """Commit the group offsets of the partitions still assigned."""
        assigned = self.kafka.assignment()
        mine = {p: o for p, o in offsets.items() if p in assigned}
        if mine:
            self.kafka.commit(mine, wait=wait)

    def caught_up(self) -> bool:
        """Idle means caught up: a partition known to hold more is not the end of the stream
        (after an outage, fetching resumes only once the client rejoined the group)."""
        if any(self.lags.values()):
            return False
        return self.kafka.broker_answers(timeout_s=2.0)

    def close(self, leave_group: bool = True) -> None:
        self.kafka.close(leave_group)
