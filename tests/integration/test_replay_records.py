"""The replay's records as the broker holds them, per client: the bulk senders (issue 9, item 5)
publish what the plain send did, partition included (the Java client's murmur2)."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest

from pipeline.kafka.kafka_python import make_producer
from pipeline.kafka.transport import make_transport
from producers.replay import MAX_SPEED_OPTIONS, publish
from producers.schedule import LabelDelay, schedule
from producers.sources import SourceOptions, SourceRecord, open_source
from tests.integration.helpers import read_topic
from tests.unit.test_replay import reference

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("speed", [None, 1e12])  # full speed (bulk sender), paced (send)
def test_replayed_records_are_the_plain_loops(
    make_config: Any, transport: str, speed: float | None
) -> None:
    cfg = make_config({"kafka": {"partitions": 3}})
    rows = list(open_source("river:Phishing", SourceOptions(limit=300)))
    records = [
        SourceRecord(r.id, r.ts, r.features, r.label, key=f"key-{i % 11}" if i % 4 == 0 else None)
        for i, r in enumerate(rows)
    ]
    # One record too big for kafka-python's shortcut: it takes KafkaProducer.send.
    big = records[150]
    records[150] = SourceRecord(big.id, big.ts, {**big.features, "text": "x" * 100_000}, True)
    delay = LabelDelay(events=10)
    before = int(time.time() * 1000)
    result = publish(cfg, cfg.kafka.bootstrap, schedule(iter(records), delay), speed=speed)
    after = int(time.time() * 1000)
    assert (result.events, result.labels) == (300, 300)
    topics = cfg.kafka.topics
    on_broker = read_topic(cfg.kafka.bootstrap, topics.events) + read_topic(
        cfg.kafka.bootstrap, topics.labels
    )
    got = []
    for r in on_broker:
        headers = dict(r.headers)
        assert list(headers) == ["seq", "sent_ms"]
        assert before <= int(headers["sent_ms"]) <= after
        kind = "t.events" if r.topic == topics.events else "t.labels"
        got.append((kind, r.key, json.loads(r.value), r.partition, [headers["seq"]], r.timestamp))
    got.sort(key=lambda g: int(g[4][0]))
    expected = reference(records, delay, 3)
    assert got == expected
    assert {g[3] for g in got} == {0, 1, 2}


@pytest.mark.parametrize("full_speed", [False, True])  # the replay's options at full speed
def test_the_bulk_sender_reports_every_record_dropped(
    make_config: Any, transport: str, full_speed: bool
) -> None:
    """Records that never reach the broker (the producer aborted while they linger) come back
    through ``on_error``, one call each, as the replay counts them."""
    cfg = make_config({"kafka": {"partitions": 2}})
    kafka = make_transport(cfg.kafka, cfg.kafka.bootstrap)
    topic = cfg.kafka.topics.events
    kafka.ensure_topics([topic])
    options = MAX_SPEED_OPTIONS[kafka.name]
    producer = kafka.producer(
        **{**(options if full_speed else {}), "linger_ms": 30_000, "batch_size": 1024 * 1024}
    )
    errors: list[Exception] = []
    send = producer.sender(errors.append)
    # kafka-python sends a topic's first record through KafkaProducer.send (it waits for the
    # metadata): delivered, so that the dropped ones below took its shortcut.
    send(topic, b"first", b"{}", None, [("seq", b"0")], 1_700_000_000_000)
    producer.flush(10)
    for i in range(1, 51):
        send(topic, str(i).encode(), b"{}", None, [("seq", b"%d" % i)], 1_700_000_000_000 + i)
    producer.abort()
    deadline = time.monotonic() + 10
    while len(errors) < 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(errors) == 50
    assert all(isinstance(e, Exception) for e in errors)


@pytest.mark.parametrize("batch_bytes", [512 * 1024, 2048])  # one batch, or many filled up
def test_the_bulk_senders_records_are_kafka_pythons_own_sends(
    make_config: Any, batch_bytes: int
) -> None:
    """kafka-python's bulk sender (records appended straight to the open batch, their bytes
    written by riverline) and ``KafkaProducer.send`` with the same arguments: a consumer reads
    the same records, offsets, timestamps and headers back."""
    cfg = make_config({"kafka": {"client": "kafka-python", "partitions": 3}})
    kafka = make_transport(cfg.kafka, cfg.kafka.bootstrap)
    ours, theirs = cfg.kafka.topics.events, cfg.kafka.topics.labels
    kafka.ensure_topics([ours, theirs])
    rng = random.Random(9)
    sends: list[tuple[bytes | None, bytes, int | None, Any, int]] = []
    ts = 1_700_000_000_000
    for i in range(3000):
        # Times that go back, jump by hours or stay; keys of all lengths, a few none (an
        # explicit partition then); a few values past the shortcut's size; a header key past ASCII.
        ts += rng.choice([0, 1, 1000, -5000, 3_600_000, 2**28])
        key = None if i % 97 == 5 else b"k%d" % rng.randrange(10 ** rng.randrange(1, 9))
        size = rng.choice([0, 10, 100, 300, 9000]) if i % 250 else 70_000
        value = bytes(rng.randrange(256) for _ in range(min(size, 300))) * max(1, size // 300)
        partition = rng.randrange(3) if key is None or i % 13 == 0 else None
        headers = [("seq", b"%d" % i), ("sent_ms", b"%d" % ts)][: rng.randrange(3)]
        if i % 11 == 0:
            headers.append(("ü", b""))
        sends.append((key, value, partition, headers, ts))
    producer = kafka.producer(batch_size=batch_bytes)
    errors: list[Exception] = []
    send = producer.sender(errors.append)
    for key, value, partition, headers, stamp in sends:
        send(ours, key, value, partition, headers, stamp)  # type: ignore[arg-type]
    producer.flush(30)
    producer.close()
    plain = make_producer(cfg.kafka, cfg.kafka.bootstrap, batch_size=batch_bytes)
    for key, value, partition, headers, stamp in sends:
        plain.send(
            theirs, key=key, value=value, partition=partition, headers=headers, timestamp_ms=stamp
        )
    plain.flush(30)
    plain.close()
    assert errors == []

    def read(topic: str) -> list[Any]:
        got = read_topic(cfg.kafka.bootstrap, topic)
        fields = ("partition", "offset", "key", "value", "timestamp", "timestamp_type")
        sizes = ("serialized_key_size", "serialized_value_size", "serialized_header_size")
        return sorted(tuple(getattr(r, f) for f in (*fields, "headers", *sizes)) for r in got)

    expected = read(theirs)
    assert len(expected) == len(sends)
    assert read(ours) == expected
