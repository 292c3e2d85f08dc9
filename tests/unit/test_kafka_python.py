"""The kafka-python transport's shortcuts past kafka-python's own per-record objects.

The consumer's direct fetch path (``Record`` straight from the fetcher) reads every batch as
kafka-python's own ``PartitionRecords`` does: the same records, positions, counters and errors.
The tracked sender's batch futures tell acknowledged records as kafka-python's record futures
would. The bulk sender's open-batch append writes kafka-python's bytes, and its watched batches
report each record's failure once, as the record futures it does without would have.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError, KafkaTimeoutError, UnknownError
from kafka.producer.producer_batch import ProducerBatch
from kafka.record import MemoryRecords, MemoryRecordsBuilder
from kafka.serializer import Deserializer
from kafka.structs import TopicPartition

from pipeline.kafka.kafka_python import (
    KafkaPythonConsumer,
    KafkaPythonProducer,
    _acknowledged,
    _fetch_records_directly,
    _partition_records_class,
    _record,
)
from pipeline.kafka.transport import FlushTimeout

TP = TopicPartition("events", 3)
Base = Fetcher.PartitionRecords
Direct = _partition_records_class(Base)

records_st = st.lists(
    st.tuples(
        st.one_of(st.none(), st.binary(max_size=300)),  # key
        st.one_of(st.none(), st.binary(max_size=300)),  # value
        st.one_of(st.integers(-70, 70), st.integers(-(2**40), 2**42)),  # ms from 1.7e12
        st.lists(
            st.tuples(st.text(max_size=200), st.one_of(st.none(), st.binary(max_size=200))),
            max_size=3,
        ),
    ),
    min_size=1,
    max_size=12,
)


def build(batches: list[list[Any]], magic: int, compression: int, skip: int = 0) -> bytes:
    """Batches one after another, from offset 100 (``skip`` offsets left out between them)."""
    out, offset = b"", 100
    for records in batches:
        builder = MemoryRecordsBuilder(magic, compression, 1 << 24, offset=offset)
        first = 1_700_000_000_000
        for key, value, delta, headers in records:
            timestamp = max(0, first + delta) if magic < 2 else first + delta
            builder.append(timestamp, key, value, headers if magic == 2 else [])
        builder.close()
        out += bytes(builder.buffer())
        offset += len(records) + skip
    return out


def read(cls: type, data: bytes, fetch_offset: int, take: int) -> tuple[list[Any], list[Any]]:
    """Everything ``cls`` yields, ``take`` at a time, and its state after each take."""
    part = cls(fetch_offset, TP, MemoryRecords(data), check_crcs=True)
    got, states = [], []
    while part:
        chunk = part.take(take)
        states.append((part.next_fetch_offset, part.records_read, part.bytes_read, bool(part)))
        if not chunk and part:
            break
        got.extend(chunk)
    return got, states


@settings(max_examples=150, deadline=None)
@given(
    batches=st.lists(records_st, min_size=1, max_size=3),
    magic=st.sampled_from([0, 1, 2, 2, 2]),
    compression=st.sampled_from([0, 0, 1]),
    skip=st.integers(0, 2),
    start=st.integers(0, 5),
    take=st.integers(1, 7),
)
def test_direct_records_are_kafka_pythons(
    batches: list[Any], magic: int, compression: int, skip: int, start: int, take: int
) -> None:
    data = build(batches, magic, compression, skip)
    fetch_offset = 100 + start
    expected, expected_states = read(Base, data, fetch_offset, take)
    got, states = read(Direct, data, fetch_offset, take)
    assert got == [_record(r) for r in expected]
    assert [type(r).__name__ for r in got] == ["Record"] * len(got)
    assert states == expected_states


@pytest.mark.parametrize("magic", [1, 2])
def test_a_corrupt_batch_fails_as_kafka_pythons(magic: int) -> None:
    data = bytearray(build([[(b"k", b"value", 0, [])] * 3], magic, 0))
    data[-3] ^= 0xFF  # in the last record: the CRC no longer matches
    for cls in (Base, Direct):
        with pytest.raises(CorruptRecordError):
            read(cls, bytes(data), 100, 10)


def test_a_truncated_record_fails_as_kafka_pythons() -> None:
    records = [(b"k", b"value", 0, [("seq", b"1")])] * 3
    data = bytearray(build([records], 2, 0))
    # The first record's header count says 2: the record's own length no longer adds up. The
    # batch CRC is left unchecked to reach the record parser.
    header_count_at = data.index(b"\x06seq") - 1
    data[header_count_at] = 4
    errors = []
    for cls in (Base, Direct):
        part = cls(100, TP, MemoryRecords(bytes(data)), check_crcs=False)
        with pytest.raises(CorruptRecordError) as raised:
            part.take(10)
        errors.append(str(raised.value))
    assert errors[0] == errors[1]


def outcome(cls: type, data: bytes) -> Any:
    """What ``cls`` makes of ``data`` (CRCs unchecked): its records, or its error."""
    part = cls(100, TP, MemoryRecords(data), check_crcs=False)
    got: list[Any] = []
    try:
        while part:
            chunk = part.take(1000)
            if not chunk:
                break
            got.extend(_record(r) if cls is Base else r for r in chunk)
    except Exception as e:
        return got, type(e), str(e)
    return got, part.next_fetch_offset


@settings(max_examples=300, deadline=None)
@given(records=records_st, at=st.integers(61, 10_000), byte=st.integers(0, 255))
@example(  # a varint made huge: an index no sequence can have, the same message for both
    records=[
        (None, None, 0, []),
        (None, b"\x00", 0, []),
        (
            b"\x00",
            b"\x00" * 8,
            2**34,
            [("\x80\u0800\U000100000\x80", None), ("0\x80\x80\u0800\U00010000", None)],
        ),
    ],
    at=6470,
    byte=128,
)
def test_a_damaged_batch_reads_as_kafka_pythons(records: list[Any], at: int, byte: int) -> None:
    data = bytearray(build([records], 2, 0))
    at = 61 + at % (len(data) - 61)  # past the batch header: in the records
    data[at] = byte
    assert outcome(Direct, bytes(data)) == outcome(Base, bytes(data))


def test_the_consumer_reads_records_directly_without_deserializers() -> None:
    consumer = KafkaConsumer(bootstrap_servers=["127.0.0.1:1"], api_version=(2, 6))
    try:
        assert KafkaPythonConsumer(consumer)._direct
        assert consumer._fetcher.PartitionRecords is Direct
    finally:
        consumer.close()

    class Decode(Deserializer):  # type: ignore[misc]
        def deserialize(self, topic: str, headers: Any, data: bytes) -> Any:
            return data.decode()

    with_deserializer = KafkaConsumer(
        bootstrap_servers=["127.0.0.1:1"], api_version=(2, 6), value_deserializer=Decode()
    )
    try:
        assert not _fetch_records_directly(with_deserializer)
    finally:
        with_deserializer.close()


def _batch(records: int = 3) -> tuple[ProducerBatch, list[Any]]:
    batch = ProducerBatch(TP, MemoryRecordsBuilder(2, 0, 1 << 20))
    futures = [batch.try_append(None, b"k", b"v%d" % i, []) for i in range(records)]
    return batch, futures


@pytest.mark.parametrize(
    "outcome", ["pending", "complete", "failed", "aborted", "expired then complete"]
)
def test_a_batch_future_is_acknowledged_as_its_record_futures(outcome: str) -> None:
    batch, futures = _batch()
    if outcome == "complete":
        batch.complete(42, -1)
    elif outcome == "failed":
        batch.complete_exceptionally(KafkaTimeoutError("no"), lambda _index: KafkaTimeoutError())
    elif outcome == "aborted":
        batch.abort(KafkaTimeoutError("closed"))
    elif outcome == "expired then complete":
        batch.complete_exceptionally(KafkaTimeoutError("late"), lambda _index: KafkaTimeoutError())
        batch.complete(42, -1)  # ignored: the batch had failed already
    expected = [_acknowledged(f) for f in futures]
    assert expected == [outcome == "complete"] * len(futures)
    assert _acknowledged(batch.produce_future) == expected[0]


class _SplittingClient:
    """kafka-python's flush as it answers after a batch split: 'Future not done' once."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.flushes = 0

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1
        if self.failures:
            self.failures -= 1
            raise UnknownError("Future not done")


def test_a_flush_after_a_batch_split_waits_for_the_halves() -> None:
    client = _SplittingClient(failures=1)
    KafkaPythonProducer(client).flush(5.0)  # type: ignore[arg-type]
    assert client.flushes == 2


def test_a_flush_that_keeps_failing_past_its_time_is_a_flush_timeout() -> None:
    client = _SplittingClient(failures=10**9)
    with pytest.raises(FlushTimeout):
        KafkaPythonProducer(client).flush(0.01)  # type: ignore[arg-type]


def _watched_producer() -> tuple[KafkaPythonProducer, list[Exception]]:
    client = KafkaProducer(bootstrap_servers=["127.0.0.1:1"], api_version=(2, 6))
    producer = KafkaPythonProducer(client)
    errors: list[Exception] = []
    return producer, errors


def _mixed_batch(producer: KafkaPythonProducer, on_error: Any, records: int) -> ProducerBatch:
    """A batch as the bulk sender leaves it: its first record through the accumulator (a record
    future, on_error its errback), the others appended directly, one (the fourth) through the
    accumulator again (as a big record would be)."""
    batch = ProducerBatch(TP, MemoryRecordsBuilder(2, 0, 1 << 20))
    batch.try_append(1, b"k", b"v0", []).add_errback(on_error)
    producer._watch(batch, on_error)
    for i in range(1, records):
        if i == 3:
            batch.try_append(1 + i, b"k", b"v%d" % i, []).add_errback(on_error)
        else:
            # The sender's append to an open batch: no record future.
            assert batch.records.append(1 + i, b"k", b"v%d" % i, []) is not None
    return batch


class _IndexError(Exception):
    pass


@pytest.mark.parametrize("outcome", ["complete", "failed", "aborted", "expired then complete"])
def test_a_watched_batch_reports_each_record_once(outcome: str) -> None:
    producer, errors = _watched_producer()
    try:
        batch = _mixed_batch(producer, errors.append, 6)
        if outcome == "complete":
            batch.complete(42, -1)
        elif outcome == "failed":
            batch.complete_exceptionally(KafkaTimeoutError("no"), lambda i: _IndexError(i))
        elif outcome == "aborted":
            batch.abort(KafkaTimeoutError("closed"))
        else:
            batch.complete_exceptionally(KafkaTimeoutError("late"), lambda i: _IndexError(i))
            batch.complete(42, -1)
        if outcome == "complete":
            assert errors == []
        elif outcome == "aborted":
            assert len(errors) == 6
            assert {type(e) for e in errors} == {KafkaTimeoutError}
        else:
            assert sorted(e.args[0] for e in errors) == list(range(6))
        assert producer._watched == {}
    finally:
        producer.client.close(timeout=0)


@pytest.mark.parametrize("halves", ["complete", "failed"])
def test_a_watched_batch_split_reports_each_record_once_from_its_halves(halves: str) -> None:
    producer, errors = _watched_producer()
    try:
        accumulator = producer.client._accumulator
        batch = _mixed_batch(producer, errors.append, 7)
        batch.records.close()
        assert accumulator.split_and_reenqueue(batch) == 2
        parts = list(accumulator._batches[TP])
        assert [p.records.next_offset() for p in parts] == [4, 3]
        for part in parts:
            if halves == "complete":
                part.complete(42, -1)
            else:
                part.complete_exceptionally(KafkaTimeoutError("no"), lambda i: _IndexError(i))
            accumulator._batches[TP].popleft()
            accumulator.deallocate(part)
        assert not batch.produce_future.is_done  # kafka-python never completes a split batch
        if halves == "complete":
            assert errors == []
        else:
            # Each half's records by their index in it, each once.
            assert sorted(e.args[0] for e in errors) == [0, 0, 1, 1, 2, 2, 3]
    finally:
        producer.client.close(timeout=0)
