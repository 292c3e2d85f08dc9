"""The replay's per-record work: what it publishes is what the plain, slower code published.

The reference below is the publish loop as it was before the bulk sender (issue 9, item 5):
stdlib JSON, kafka-python's murmur2 for an explicit partition, headers built with ``str()``.
"""

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2 as kafka_murmur2

from pipeline.config import load_config
from pipeline.kafka.records import SENT_HEADER, SEQ_HEADER
from pipeline.kafka.transport import Headers, OnError, Send, TransportError, murmur2
from producers import replay as replay_module
from producers.replay import encode, event_payload, label_payload, replay
from producers.schedule import LabelDelay, schedule
from producers.sources import SourceOptions, SourceRecord, open_source

_stdlib = json.JSONEncoder(separators=(",", ":")).encode


def same_json(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_json(a[k], b[k]) for k in a)
    return bool(a == b)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # beyond 64 bits too
    st.floats(),  # NaN and the infinities too
    st.text(),  # lone surrogates too
)
keys = st.one_of(st.text(), st.integers(), st.floats(allow_nan=False), st.booleans(), st.none())


@settings(max_examples=500, deadline=None)
@given(features=st.dictionaries(keys, scalars, max_size=6), label=scalars)
@example(features={"x": 1e16, "y": 1e-7, "z": -0.0}, label=None)
@example(features={"caf\u00e9": "\ud800", 2**70: float("inf")}, label=float("nan"))
def test_encode_reads_back_as_the_standard_library_writes(features: Any, label: Any) -> None:
    for payload in ({"id": "1", "ts": 1.5, "features": features}, {"id": "1", "label": label}):
        ours = encode(payload)
        assert isinstance(ours, bytes)
        assert same_json(json.loads(ours), json.loads(_stdlib(payload)))


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=40))
def test_murmur2_is_kafka_pythons(data: bytes) -> None:
    assert murmur2(data) == kafka_murmur2(data)


class FakeTransport:
    """Records what the replay hands to the bulk sender; ``fail`` names seqs to refuse."""

    name = "kafka-python"  # the transport's name, which picks its full-speed options

    def __init__(self, partitions: int, fail: frozenset[int] = frozenset()) -> None:
        self.partitions = partitions
        self.fail = fail
        self.sent: list[tuple[str, bytes, bytes, int, Headers, int]] = []
        self.flushed = self.closed = False

    def ensure_topics(self, names: list[str], timeout_s: float = 30.0) -> None:
        pass

    def partition_count(self, topic: str) -> int:
        return self.partitions

    def producer(self, **overrides: Any) -> "FakeTransport":
        return self

    def send(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        *,
        partition: int | None = None,
        headers: Headers | None = None,
        timestamp_ms: int | None = None,
        on_delivery: Callable[[Exception | None], None] | None = None,
    ) -> None:
        assert headers is not None and timestamp_ms is not None and on_delivery is not None
        self.sender(on_delivery)(topic, key, value, partition, headers, timestamp_ms)

    def sender(self, on_error: OnError) -> Send:
        def send(
            topic: str,
            key: bytes,
            value: bytes,
            partition: int | None,
            headers: Headers,
            timestamp_ms: int,
        ) -> None:
            if partition is None:  # as the transports do: Java's murmur2 of the key
                partition = (kafka_murmur2(key) & 0x7FFFFFFF) % self.partitions
            self.sent.append((topic, key, value, partition, headers, timestamp_ms))
            if int(headers[0][1]) in self.fail:
                on_error(RuntimeError("refused"))

        return send

    def flush(self, timeout_s: float) -> None:
        self.flushed = True

    def close(self) -> None:
        self.closed = True


def reference(
    records: list[SourceRecord], delay: LabelDelay, partitions: int
) -> list[tuple[str, bytes, Any, int, list[bytes], int]]:
    """What the publish loop sent before issue 9, item 5 (the sent_ms header's name only)."""
    out = []
    for emission in schedule(iter(records), delay):
        record = emission.record
        key = (record.key if record.key is not None else record.id).encode()
        if emission.kind == "event":
            topic, payload = "t.events", event_payload(record)
        else:
            topic, payload = "t.labels", label_payload(record, emission.ts)
        partition = (kafka_murmur2(key) & 0x7FFFFFFF) % partitions if partitions > 1 else 0
        seq = str(emission.seq).encode()
        out.append(
            (topic, key, json.loads(_stdlib(payload)), partition, [seq], int(emission.ts * 1000))
        )
    return out


def config() -> Any:
    return load_config(
        None,
        {"name": "t", "kafka": {"topics": {"events": "t.events", "labels": "t.labels"}}},
        environ={},
    )


def patched(monkeypatch: pytest.MonkeyPatch, fake: FakeTransport) -> None:
    factory: Callable[..., FakeTransport] = lambda *_: fake  # noqa: E731
    monkeypatch.setattr(replay_module, "make_transport", factory)


@pytest.mark.parametrize("speed", [None, 1e12])  # full speed (bulk sender), paced (send)
@pytest.mark.parametrize("partitions", [1, 3])
@pytest.mark.parametrize("source", ["river:Phishing", "river:TrumpApproval"])
def test_publish_sends_what_the_plain_loop_sent(
    monkeypatch: pytest.MonkeyPatch, partitions: int, source: str, speed: float | None
) -> None:
    records = list(open_source(source, SourceOptions(limit=300)))
    # Keys from a column, and ids, of various lengths (murmur2's tail of 0-3 bytes).
    records = [
        SourceRecord(r.id, r.ts, r.features, r.label, key=f"k{i % 7}" if i % 3 else None)
        for i, r in enumerate(records)
    ]
    fake = FakeTransport(partitions)
    patched(monkeypatch, fake)
    delay = LabelDelay(events=10)
    result = replay_module.publish(config(), "nowhere", schedule(iter(records), delay), speed=speed)
    assert (result.events, result.labels) == (300, 300)
    assert fake.flushed and fake.closed
    expected = reference(records, delay, partitions)
    got = [
        (topic, key, json.loads(value), partition, [h[1] for h in headers][:1], ts)
        for topic, key, value, partition, headers, ts in fake.sent
    ]
    assert got == expected
    for *_, headers, _ts in fake.sent:
        assert [name for name, _ in headers] == [SEQ_HEADER, SENT_HEADER]
        assert headers[1][1].isdigit()


@pytest.mark.parametrize("speed", [None, 1e12])
def test_records_not_acknowledged_stop_the_replay(
    monkeypatch: pytest.MonkeyPatch, speed: float | None
) -> None:
    fake = FakeTransport(1, fail=frozenset({3, 7}))
    patched(monkeypatch, fake)
    with pytest.raises(TransportError) as raised:
        replay(config(), "nowhere", "river:Phishing", LabelDelay(events=1), speed=speed)
    assert str(raised.value) == (
        "2 records were not acknowledged by the broker (first: refused); replay again into "
        "fresh topics"
    )
    assert fake.closed
