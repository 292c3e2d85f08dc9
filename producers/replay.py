"""``riverline replay``: publish a source to the events and labels topics in River's order.

Emissions come from :func:`producers.schedule.schedule` (``stream.simulate_qa``'s order), each
with its event time as the record timestamp and a ``seq`` header, so the consumer's merge can
rebuild exactly this order however the broker batches.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from pipeline.config import RiverlineConfig
from pipeline.kafka.records import SENT_HEADER, SEQ_HEADER
from pipeline.kafka.transport import (
    DELIVERY_TIMEOUT_MS,
    TransportError,
    make_transport,
    stable_partition,
)
from producers.schedule import Emission, LabelDelay, schedule
from producers.sources import SourceError, SourceOptions, SourceRecord, open_source

MAX_SPEED_OPTIONS = {"linger_ms": 20, "batch_size": 512 * 1024}


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


def publish(
    config: RiverlineConfig,
    bootstrap: str,
    emissions: Iterable[Emission],
    *,
    speed: float | None = None,
    on_emission: Callable[[Emission], None] | None = None,
) -> ReplayResult:
    """Send emissions in order; returns the counts once every record is acknowledged.

    Each record goes to an explicit partition, the one the Java client's default partitioner
    (murmur2) gives its key, so an event and its label share a partition number, keyed sends
    of the same key elsewhere agree, and the client skips its own partitioner. A record the
    broker did not acknowledge stops the replay with an error.
    """
    topics = config.kafka.topics
    transport = make_transport(config.kafka, bootstrap)
    transport.ensure_topics([topics.events, topics.labels])
    partitions = {t: transport.partition_count(t) or 1 for t in (topics.events, topics.labels)}
    events_partitions, labels_partitions = partitions[topics.events], partitions[topics.labels]
    # As fast as it goes: bigger batches, and fewer wake-ups of the client's sender (kafka-python
    # takes its accumulator's lock per record, which a sender draining every 1 ms contends for).
    # Paced, the configured linger keeps the send time close to the records' schedule.
    producer = transport.producer(**(MAX_SPEED_OPTIONS if speed is None else {}))
    failed: list[Exception] = []

    def delivered(error: Exception | None) -> None:
        if error is not None:
            failed.append(error)

    pacer = Pacer(speed) if speed is not None else None
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    send = producer.send
    result = ReplayResult()
    started = time.monotonic()
    try:
        for emission in emissions:
            if pacer is not None:
                pacer.wait(emission.ts)
            record = emission.record
            key = (record.key if record.key is not None else record.id).encode()
            if emission.kind == "event":
                topic, payload, count = topics.events, event_payload(record), events_partitions
                result.events += 1
            else:
                topic, payload, count = (
                    topics.labels,
                    label_payload(record, emission.ts),
                    (labels_partitions),
                )
                result.labels += 1
            send(
                topic,
                key,
                dumps(payload).encode(),
                partition=stable_partition(key, count) if count > 1 else 0,
                headers=[
                    (SEQ_HEADER, str(emission.seq).encode()),
                    (SENT_HEADER, str(int(time.time() * 1000)).encode()),
                ],
                timestamp_ms=int(emission.ts * 1000),
                on_delivery=delivered,
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
    result.seconds = time.monotonic() - started
    return result


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
