"""``riverline replay``: publish a source to the events and labels topics in River's order.

Emissions come from :func:`producers.schedule.schedule` (``stream.simulate_qa``'s order), each
with its event time as the record timestamp and a ``seq`` header, so the consumer's merge can
rebuild exactly this order however the broker batches.
"""

from __future__ import annotations

import contextlib
import gc
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import orjson

from pipeline.config import RiverlineConfig
from pipeline.kafka.records import SENT_HEADER, SEQ_HEADER
from pipeline.kafka.transport import (
    DELIVERY_TIMEOUT_MS,
    Headers,
    Producer,
    Send,
    TransportError,
    make_transport,
)
from producers.schedule import Emission, LabelDelay, schedule
from producers.sources import SourceError, SourceOptions, SourceRecord, open_source

# The producer's options at full speed, by transport name: batches of kafka.batch_bytes; with
# librdkafka a delivery report only for a record that failed, all the bulk sender reports (a
# Python callback per record acknowledged was ~5% of the replay's CPU).
MAX_SPEED_OPTIONS: dict[str, dict[str, Any]] = {
    "kafka-python": {"linger_ms": 20},
    "confluent": {"linger_ms": 20, "delivery.report.only.error": True},
}


@dataclass
class ReplayResult:
    events: int = 0
    labels: int = 0
    skipped: int = 0
    seconds: float = 0.0


def event_payload(record: SourceRecord) -> dict[str, Any]:
    payload: dict[str, Any] = {"id": record.id, "ts": record.ts, "features": record.features}
    if record.key is not None:
        payload["key"] = record.key
    if record.attributes:
        payload["attributes"] = record.attributes
    return payload


def label_payload(record: SourceRecord, ts: float) -> dict[str, Any]:
    return {"id": record.id, "ts": ts, "label": record.label, "source": "ground_truth"}


_stdlib_dumps = json.JSONEncoder(separators=(",", ":")).encode
# A compiled search rather than ``in``: bytes' ``in`` first tries its operand as an integer, and
# raising and clearing that TypeError costs twice the search (0.2 against 0.1 µs per record).
_has_null = re.compile(b"null").search


def encode(payload: dict[str, Any]) -> bytes:
    """A payload's JSON: orjson's (ten times faster), or the standard library's where the two
    would not read back the same.

    orjson writes NaN and the infinities as ``null``, where the standard library writes ``NaN``
    and ``Infinity`` (which the consumer dead-letters as not finite): a payload with a ``null``
    is written again by the standard library. orjson refuses what the standard library takes
    (integers beyond 64 bits, keys that are not strings, lone surrogates): those too.

    >>> encode({"id": "1", "features": {"x": 0.1, "n": None, "y": float("nan")}})
    b'{"id":"1","features":{"x":0.1,"n":null,"y":NaN}}'
    >>> encode({"id": "1", "features": {"big": 2**64, 3: "c"}})
    b'{"id":"1","features":{"big":18446744073709551616,"3":"c"}}'
    """
    try:
        raw = orjson.dumps(payload)
    except TypeError:  # orjson.JSONEncodeError is one
        return _stdlib_dumps(payload).encode()
    if _has_null(raw) is not None:
        return _stdlib_dumps(payload).encode()
    return raw


@contextlib.contextmanager
def fewer_collections(allocations: int = 10_000) -> Iterator[None]:
    """Run the cyclic garbage collector's young generation every ``allocations`` allocations
    (at least) instead of every 700, the default.

    kafka-python keeps a future per record (a lock, two callback lists, a cycle with its
    batch's) until the batch is acknowledged. Collected every 700 allocations, i.e. every
    hundred records or so, those futures are each scanned and moved to the older generations
    before they die, which made up ~40% of the replay's time at full speed. Collected ten
    times less often, most have died by then.

    >>> before = gc.get_threshold()
    >>> with fewer_collections():
    ...     gc.get_threshold()[0] >= 10_000
    True
    >>> gc.get_threshold() == before
    True
    """
    thresholds = gc.get_threshold()
    gc.set_threshold(max(allocations, thresholds[0]), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


class Pacer:
    """Sleeps so that event time advances ``speed`` times faster than wall time."""

    def __init__(self, speed: float | None) -> None:
        self.speed = speed
        self.origin: tuple[float, float] | None = None

    def wait(self, ts: float) -> None:
        if self.speed is None:
            return
        now = time.monotonic()
        if self.origin is None:
            self.origin = (ts, now)
            return
        due = self.origin[1] + (ts - self.origin[0]) / self.speed
        if due > now:
            time.sleep(due - now)


def acknowledged_sender(producer: Producer, failed: list[Exception]) -> Send:
    """:meth:`Producer.sender`'s signature over :meth:`Producer.send`, which reports every
    record's acknowledgement: what a paced replay uses, being bound by its pace rather than by
    per-record work, so that a record's time to acknowledgement can still be observed
    (``benchmarks/latency.py`` wraps ``send``)."""

    def delivered(error: Exception | None) -> None:
        if error is not None:
            failed.append(error)

    def send(
        topic: str,
        key: bytes,
        value: bytes,
        partition: int | None,
        headers: Headers,
        timestamp_ms: int,
    ) -> None:
        producer.send(
            topic,
            key,
            value,
            partition=partition,
            headers=headers,
            timestamp_ms=timestamp_ms,
            on_delivery=delivered,
        )

    return send


def publish(
    config: RiverlineConfig,
    bootstrap: str,
    emissions: Iterable[Emission],
    *,
    speed: float | None = None,
    on_emission: Callable[[Emission], None] | None = None,
) -> ReplayResult:
    """Send emissions in order; returns the counts once every record is acknowledged.

    Each record goes to the partition the Java client's default partitioner (murmur2) gives its
    key, so an event and its label share a partition number, and keyed sends of the same key
    elsewhere agree. A record the broker did not acknowledge stops the replay with an error.
    """
    topics = config.kafka.topics
    transport = make_transport(config.kafka, bootstrap)
    transport.ensure_topics([topics.events, topics.labels])
    # As fast as it goes: bigger batches, and fewer wake-ups of the client's sender (kafka-python
    # takes its accumulator's lock per record, which a sender draining every 1 ms contends for).
    # Paced, the configured linger keeps the send time close to the records' schedule.
    producer = transport.producer(**(MAX_SPEED_OPTIONS[transport.name] if speed is None else {}))
    failed: list[Exception] = []
    pacer = Pacer(speed) if speed is not None else None
    send = (
        producer.sender(failed.append) if pacer is None else acknowledged_sender(producer, failed)
    )
    events_topic, labels_topic = topics.events, topics.labels
    now = time.time
    events = labels = 0
    started = time.monotonic()
    try:
        with fewer_collections():
            # Per record only what differs; the partition is left to the transport (murmur2 in C
            # with librdkafka).
            for emission in emissions:
                if pacer is not None:
                    pacer.wait(emission.ts)
                record = emission.record
                if emission.kind == "event":
                    topic, value = events_topic, encode(event_payload(record))
                    events += 1
                else:
                    topic, value = labels_topic, encode(label_payload(record, emission.ts))
                    labels += 1
                send(
                    topic,
                    (record.key if record.key is not None else record.id).encode(),
                    value,
                    None,
                    [(SEQ_HEADER, b"%d" % emission.seq), (SENT_HEADER, b"%d" % int(now() * 1000))],
                    int(emission.ts * 1000),
                )
                if on_emission is not None:
                    on_emission(emission)
        producer.flush(DELIVERY_TIMEOUT_MS / 1000 + 5)
    finally:
        producer.close()
    if failed:
        raise TransportError(
            f"{len(failed)} records were not acknowledged by the broker (first: {failed[0]}); "
            "replay again into fresh topics"
        )
    return ReplayResult(events, labels, seconds=time.monotonic() - started)


def replay(
    config: RiverlineConfig,
    bootstrap: str,
    source: str,
    delay: LabelDelay | None,
    *,
    options: SourceOptions | None = None,
    speed: float | None = None,
    on_emission: Callable[[Emission], None] | None = None,
) -> ReplayResult:
    """Read ``source`` and publish it with labels delayed by ``delay`` (None: no labels)."""
    options = options or SourceOptions()
    skipped = 0
    caller_on_skip = options.on_skip

    def count_skip(error: SourceError) -> None:
        nonlocal skipped
        skipped += 1
        if caller_on_skip is not None:
            caller_on_skip(error)

    records = open_source(source, replace(options, on_skip=count_skip))
    emissions: Iterable[Emission] = schedule(
        records, delay or LabelDelay(events=0), options.interval
    )
    if delay is None:
        # No ground-truth stream: people (review answers) are the only teachers.
        emissions = (e for e in emissions if e.kind == "event")
    result = publish(
        config,
        bootstrap,
        emissions,
        speed=speed,
        on_emission=on_emission,
    )
    result.skipped = skipped
    return result
