"""The replay's records as the broker holds them, per client: the bulk senders (issue 9, item 5)
publish what the plain send did, partition included (the Java client's murmur2)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from pipeline.kafka.transport import make_transport
from producers.replay import publish
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


def test_the_bulk_sender_reports_every_record_dropped(make_config: Any, transport: str) -> None:
    """Records that never reach the broker (the producer aborted while they linger) come back
    through ``on_error``, one call each, as the replay counts them."""
    cfg = make_config({"kafka": {"partitions": 2}})
    kafka = make_transport(cfg.kafka, cfg.kafka.bootstrap)
    topic = cfg.kafka.topics.events
    kafka.ensure_topics([topic])
    producer = kafka.producer(linger_ms=30_000, batch_size=1024 * 1024)
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
