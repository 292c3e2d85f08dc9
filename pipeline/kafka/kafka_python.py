"""The kafka-python transport: pure Python, the default dependency."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as TP
from kafka.admin import NewTopic
from kafka.errors import (
    CorruptRecordError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
    UnknownError,
)
from kafka.partitioner import DefaultPartitioner
from kafka.producer.future import FutureProduceResult, FutureRecordMetadata
from kafka.record.default_records import DefaultRecordBatch
from kafka.record.util import decode_varint
from kafka.structs import OffsetAndMetadata

from pipeline import shortcuts
from pipeline.config import KafkaConfig
from pipeline.kafka.transport import (
    DELIVERY_TIMEOUT_MS,
    Barrier,
    FlushTimeout,
    Headers,
    OnDelivery,
    OnError,
    OnPartitions,
    Output,
    Partition,
    Record,
    Send,
    SendOutput,
    TransportError,
    stable_partition,
)

log = logging.getLogger(__name__)

# kafka.fetch_max_wait_ms when unset: each fetch round trip runs kafka-python's Python (idle, on
# Tansu: 13% of a core at 10 ms, 18% at 5), for no latency gain measured at 1,000 ev/s.
FETCH_MAX_WAIT_MS = 10
# The fetch and produce shortcuts below read kafka-python's internals: each runs only on the
# versions pipeline.shortcuts lists for it, any other takes the public path.
# Records up to this size (key and value; the replay's two headers are a few bytes) skip
# KafkaProducer.send's checks in the bulk sender: its size check could not refuse them.
_SMALL_RECORD = 64 * 1024
# kafka.batch_bytes (512 KiB) rather than kafka-python's 16 KiB: a batch then holds everything a
# busy consumer publishes while one produce request is in flight (one at a time, for order).
# With 16 KiB a batch holds ~50 predictions, a slow broker round trip (Tansu: 5-15 ms) leaves
# several batches waiting, each its own request, and every record appended behind a full one
# wakes the sender thread. linger_ms still decides when a batch leaves.
# A tracked sender drops its acknowledged records once it keeps this many (and twice as many as
# were still unacknowledged at the last drop): memory bounded by what is in flight.
_TRIM_AT = 10_000


def _common(config: KafkaConfig, bootstrap: str) -> dict[str, Any]:
    return {"bootstrap_servers": bootstrap.split(","), **config.client_options}


def make_producer(config: KafkaConfig, bootstrap: str, **overrides: Any) -> KafkaProducer:
    options: dict[str, Any] = {
        "acks": "all",
        "linger_ms": config.linger_ms,
        "retries": 10,
        "max_in_flight_requests_per_connection": 1,  # keeps per-partition order across retries
        "batch_size": config.batch_bytes,
        # What riverline bounds its outputs by (pipeline.schemas.RECORD_OVERHEAD below it).
        "max_request_size": config.max_message_bytes,
        "delivery_timeout_ms": DELIVERY_TIMEOUT_MS,
        **_common(config, bootstrap),
        **overrides,
    }
    return KafkaProducer(**options)


def force_close(producer: KafkaProducer, timeout_s: float = 5.0) -> None:
    """Close ``producer`` at once: every record it still holds fails instead of being sent later.

    ``close()`` flushes first, so it never returns for a stuck producer, and ``close(0)`` raises
    while records are pending before it would force the close: the sender thread is told
    directly, and joined, so its futures have failed when this returns. A record already on the
    wire may still have been written: the broker alone knows.
    """
    sender = getattr(producer, "_sender", None)
    with contextlib.suppress(Exception):
        if sender is not None:
            sender.force_close()
            sender.join(timeout_s)
        producer.close(timeout=0)


def make_consumer(
    config: KafkaConfig, bootstrap: str, group_id: str | None, **overrides: Any
) -> KafkaConsumer:
    options: dict[str, Any] = {
        "group_id": group_id,
        "enable_auto_commit": False,  # Redis checkpoints are the source of truth, not the group
        "auto_offset_reset": config.reset_policy,
        "session_timeout_ms": config.session_timeout_ms,
        "heartbeat_interval_ms": config.heartbeat_interval_ms,
        "max_poll_interval_ms": config.max_poll_interval_ms,
        "max_poll_records": config.max_poll_records,
        "max_partition_fetch_bytes": config.max_partition_fetch_bytes,
        "fetch_max_wait_ms": config.fetch_wait_ms(FETCH_MAX_WAIT_MS),
        **_common(config, bootstrap),
        **overrides,
    }
    return KafkaConsumer(**options)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, on_assigned: OnPartitions, on_revoked: OnPartitions) -> None:
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked

    def on_partitions_revoked(self, revoked: list[TP]) -> None:
        self.on_revoked([(tp.topic, tp.partition) for tp in revoked])

    def on_partitions_assigned(self, assigned: list[TP]) -> None:
        self.on_assigned([(tp.topic, tp.partition) for tp in assigned])


def _record(r: Any) -> Record:
    return Record(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp, r.headers)


def _v2_records(batch: Any, topic: str, number: int, state: Any) -> Iterator[Record]:
    """The records of one message format v2 batch, as :class:`Record`, read from its buffer as
    kafka-python's ``DefaultRecordBatch._read_msg`` reads them (the same fields, checks and
    errors), without a ``DefaultRecord`` per record. ``state`` (the ``PartitionRecords``) has
    its fetch position and counters moved on per record, as kafka-python's own loop does."""
    iter(batch)  # decompresses
    # One copy of the batch, then each key and value a slice of it (bytes already).
    data, pos = bytes(batch._buffer), batch._pos
    base_offset, first_timestamp = batch.base_offset, batch.first_timestamp
    append_time = batch.max_timestamp if batch.timestamp_type == batch.LOG_APPEND_TIME else None
    for _ in range(batch._num_records):
        try:
            # Varints inline when they fit in one byte, as most of a record's do (zigzag, as
            # kafka-python's decode_varint).
            b = data[pos]
            if b < 0x80:
                length, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                length, pos = decode_varint(data, pos)
            start = pos
            # The attributes, unused (kafka-python skips them too).
            b = data[pos]
            if b < 0x80:
                _, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                _, pos = decode_varint(data, pos)
            b = data[pos]
            if b < 0x80:
                ts_delta, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                ts_delta, pos = decode_varint(data, pos)
            b = data[pos]
            if b < 0x80:
                offset_delta, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                offset_delta, pos = decode_varint(data, pos)
            b = data[pos]
            if b < 0x80:
                key_len, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                key_len, pos = decode_varint(data, pos)
            key = None
            if key_len >= 0:
                key = data[pos : pos + key_len]
                pos += key_len
            b = data[pos]
            if b < 0x80:
                value_len, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                value_len, pos = decode_varint(data, pos)
            value = None
            if value_len >= 0:
                value = data[pos : pos + value_len]
                pos += value_len
            b = data[pos]
            if b < 0x80:
                header_count, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                header_count, pos = decode_varint(data, pos)
            if header_count < 0:
                raise CorruptRecordError(f"Found invalid number of record headers {header_count}")
            headers: list[Any] = []
            while header_count:
                b = data[pos]
                if b < 0x80:
                    h_key_len, pos = (b >> 1) ^ -(b & 1), pos + 1
                else:
                    h_key_len, pos = decode_varint(data, pos)
                if h_key_len < 0:
                    raise CorruptRecordError(f"Invalid negative header key size {h_key_len}")
                h_key = data[pos : pos + h_key_len].decode("utf-8")
                pos += h_key_len
                b = data[pos]
                if b < 0x80:
                    h_value_len, pos = (b >> 1) ^ -(b & 1), pos + 1
                else:
                    h_value_len, pos = decode_varint(data, pos)
                h_value = None
                if h_value_len >= 0:
                    h_value = data[pos : pos + h_value_len]
                    pos += h_value_len
                headers.append((h_key, h_value))
                header_count -= 1
        except (ValueError, IndexError) as err:
            if type(err) is IndexError and str(err) == "index out of range":
                # kafka-python reads a bytearray, whose message names it (an index too large for
                # any sequence, past a damaged varint, reads the same for both).
                err = IndexError("bytearray index out of range")
            raise CorruptRecordError(f"Found invalid record structure: {err!r}") from None
        if pos - start != length:
            raise CorruptRecordError(
                f"Invalid record size: expected to read {length} bytes in record payload, "
                f"but instead read {pos - start}"
            )
        offset = base_offset + offset_delta
        state.records_read += 1
        state.bytes_read += length
        state.next_fetch_offset = offset + 1
        yield Record(
            topic,
            number,
            offset,
            key,
            value,
            first_timestamp + ts_delta if append_time is None else append_time,
            headers,
        )
    if pos != len(data):
        raise CorruptRecordError(f"{len(data) - pos} unconsumed bytes after all records consumed")


_direct_classes: dict[type, type] = {}


def _partition_records_class(base: type) -> type:
    """kafka-python 3's ``Fetcher.PartitionRecords`` yielding :class:`Record` rather than
    ``ConsumerRecord``: its ``_unpack_records`` for a consumer without deserializers, the same
    batch handling (CRCs, aborted transactions, control batches, positions), the records of a
    v2 batch read by :func:`_v2_records`."""
    direct = _direct_classes.get(base)
    if direct is not None:
        return direct
    from kafka.protocol.consumer import IsolationLevel  # kafka-python 3's

    class PartitionRecords(base):  # type: ignore[valid-type,misc]
        def _unpack_records(
            self, tp: TP, records: Any, key_deserializer: Any, value_deserializer: Any
        ) -> Iterator[Record]:
            topic, number = tp.topic, tp.partition
            try:
                batch = records.next_batch()
                last_batch = None
                while batch is not None:
                    last_batch = batch
                    if self.check_crcs and not batch.validate_crc():
                        raise CorruptRecordError(
                            f"Record batch for partition {self.topic_partition} at offset "
                            f"{batch.base_offset} failed crc check"
                        )
                    if batch.magic == 2:
                        self.leader_epoch = batch.leader_epoch
                        if (
                            self.isolation_level == IsolationLevel.READ_COMMITTED
                            and batch.has_producer_id()
                        ):
                            self._consume_aborted_transactions_up_to(batch.last_offset)
                            producer_id = batch.producer_id
                            if self._contains_abort_marker(batch):
                                self.aborted_producer_ids.discard(producer_id)
                            elif self._is_batch_aborted(batch):
                                self.next_fetch_offset = batch.next_offset
                                batch = records.next_batch()
                                continue
                        if batch.is_control_batch:
                            self.next_fetch_offset = batch.next_offset
                            batch = records.next_batch()
                            continue
                        if type(batch) is DefaultRecordBatch:
                            yield from _v2_records(batch, topic, number, self)
                            batch = records.next_batch()
                            continue
                    for record in batch:
                        if self.check_crcs and not record.validate_crc():
                            raise CorruptRecordError(
                                f"Record for partition {self.topic_partition} at offset "
                                f"{record.offset} failed crc check"
                            )
                        self.records_read += 1
                        self.bytes_read += record.size_in_bytes
                        self.next_fetch_offset = record.offset + 1
                        yield Record(
                            topic,
                            number,
                            record.offset,
                            record.key,
                            record.value,
                            record.timestamp,
                            record.headers,
                        )
                    batch = records.next_batch()
                # Format v2 keeps a batch's last offset even when compaction removed its last
                # record: the next fetch starts after the batch.
                if last_batch is not None and last_batch.magic == 2:
                    self.next_fetch_offset = last_batch.next_offset
                self.drain()
            except StopIteration:
                # A StopIteration raised inside a generator would end it silently.
                raise RuntimeError("StopIteration raised unpacking messageset") from None

    _direct_classes[base] = PartitionRecords
    return PartitionRecords


def _fetch_records_directly(consumer: KafkaConsumer) -> bool:
    """Make the consumer's fetcher yield :class:`Record` (see :func:`_partition_records_class`)
    when it has no deserializers, on a kafka-python version this was checked against
    (:mod:`pipeline.shortcuts`); whether it does."""
    if (
        consumer.config.get("key_deserializer") is not None
        or consumer.config.get("value_deserializer") is not None
    ):
        return False
    fetcher: Any = getattr(consumer, "_fetcher", None)
    base = getattr(fetcher, "PartitionRecords", None)

    def internals() -> bool:
        return hasattr(base, "_unpack_records") and (
            {"_buffer", "_pos", "_num_records"} <= set(DefaultRecordBatch.__slots__)
        )

    if not shortcuts.allowed("kafka-python.fetch", internals) or base is None:
        return False
    fetcher.PartitionRecords = _partition_records_class(base)
    return True


class KafkaPythonConsumer:
    """:class:`pipeline.kafka.transport.Consumer` on kafka-python's ``KafkaConsumer``.

    kafka-python 3 runs the rebalance callbacks on its IO thread, possibly while the caller is
    between two polls: the callbacks must not make blocking consumer calls.
    """

    def __init__(self, consumer: KafkaConsumer) -> None:
        self.client = consumer
        # Records come out of the fetcher as Records already, or as ConsumerRecords to convert.
        self._direct = _fetch_records_directly(consumer)

    def subscribe(
        self, topics: list[str], on_assigned: OnPartitions, on_revoked: OnPartitions
    ) -> None:
        self.client.subscribe(topics, listener=_Listener(on_assigned, on_revoked))

    def poll(self, timeout_ms: int) -> dict[Partition, list[Record]]:
        batches = self.client.poll(timeout_ms=timeout_ms)
        if self._direct:
            return {(tp.topic, tp.partition): records for tp, records in batches.items()}
        return {
            (tp.topic, tp.partition): [_record(r) for r in records]
            for tp, records in batches.items()
        }

    def seek(self, partition: Partition, offset: int) -> None:
        self.client.seek(TP(*partition), offset)

    def seek_to_beginning(self, partition: Partition) -> None:
        self.client.seek_to_beginning(TP(*partition))

    def seek_to_end(self, partition: Partition) -> None:
        self.client.seek_to_end(TP(*partition))

    def pause(self, partitions: Iterable[Partition]) -> None:
        self.client.pause(*(TP(*p) for p in partitions))

    def resume(self, partitions: Iterable[Partition]) -> None:
        self.client.resume(*(TP(*p) for p in partitions))

    def assignment(self) -> set[Partition]:
        return {(tp.topic, tp.partition) for tp in self.client.assignment()}

    def lag(self, partition: Partition) -> int | None:
        tp = TP(*partition)
        highwater = self.client.highwater(tp)
        if highwater is None:
            return None
        return max(0, highwater - self.client.position(tp))

    def commit(self, offsets: dict[Partition, int], wait: bool = False) -> None:  # always waits
        self.client.commit({TP(*p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})

    def broker_answers(self, timeout_s: float) -> bool:
        assignment = list(self.client.assignment())
        if not assignment:
            return False
        try:
            # Only whether it answers: Tansu's ListOffsets answer itself is wrong.
            self.client.end_offsets(assignment, timeout_ms=int(timeout_s * 1000))
        except KafkaError as e:
            log.warning("the broker does not answer (%s): waiting for it", e)
            return False
        return True

    def raise_fetch_wait(self, cap_ms: int) -> int | None:
        # The fetcher reads its own copy of the setting each time it builds a fetch request.
        config = getattr(getattr(self.client, "_fetcher", None), "config", None)
        if not isinstance(config, dict) or "fetch_max_wait_ms" not in config:
            return None
        current = int(config["fetch_max_wait_ms"])
        if current >= cap_ms:
            return None
        wait = min(cap_ms, max(2 * current, 8))
        config["fetch_max_wait_ms"] = wait
        self.client.config["fetch_max_wait_ms"] = wait
        return wait

    def close(self, leave_group: bool = True) -> None:
        if not leave_group:
            # kafka-python has no setting for it: its close() leaves through this method.
            coordinator = getattr(self.client, "_coordinator", None)
            if coordinator is not None:
                coordinator.maybe_leave_group = lambda *args, **kwargs: None
        self.client.close()


class KafkaPythonProducer:
    """:class:`pipeline.kafka.transport.Producer` on kafka-python's ``KafkaProducer``."""

    def __init__(self, producer: KafkaProducer) -> None:
        self.client = producer
        # The bulk senders' batches whose records have no futures, each with its on_error
        # (see _watch); None until there is one.
        self._watched: dict[Any, OnError] | None = None

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: Headers | None = None,
        timestamp_ms: int | None = None,
        on_delivery: OnDelivery | None = None,
    ) -> None:
        future = self.client.send(
            topic,
            key=key,
            value=value,
            partition=partition,
            headers=headers,
            timestamp_ms=timestamp_ms,
        )
        if on_delivery is not None:
            future.add_callback(lambda _metadata: on_delivery(None))
            future.add_errback(on_delivery)

    def sender(self, on_error: OnError) -> Send:
        """Small records go straight to their partition's open batch (see
        :meth:`_record_appender`); a failure is reported to ``on_error``, once per record.

        A record appended to an open batch has no future of its own: its batch's future, watched
        once (:meth:`_watch`), reports it as kafka-python's record future would have.
        """
        # What watching a batch reads of kafka-python 3 (else a future per record).
        watchable = hasattr(self.client, "_accumulator") and hasattr(
            self.client._accumulator, "split_and_reenqueue"
        )
        append_record = (
            self._record_appender(
                batch_futures=True, on_batch=lambda batch: self._watch(batch, on_error)
            )
            if watchable and "args" in FutureRecordMetadata.__slots__
            else self._record_appender()
        )

        def send(
            topic: str,
            key: bytes,
            value: bytes,
            partition: int | None,
            headers: Headers,
            timestamp_ms: int,
        ) -> None:
            future = append_record(topic, key, value, partition, headers, timestamp_ms)
            if future is not None:
                future.add_errback(on_error)

        return send

    def _watch(self, batch: Any, on_error: OnError) -> None:
        """Report to ``on_error`` the failure of each record of ``batch`` that has no record
        future (the sender's records appended to it directly), as their record futures would
        have: kafka-python completes a batch's future as a success carrying a function of the
        record's index to its error, or None. A record future of the batch reports its own."""
        watched = self._watched
        if watched is None:
            watched = self._watched = {}
            self._give_split_batches_record_futures()
        watched[batch] = on_error

        def uncovered() -> list[int]:
            covered = {f.args[0] for f in batch._record_futures}
            return [i for i in range(batch.records.next_offset()) if i not in covered]

        def done(result: Any) -> None:
            watched.pop(batch, None)
            errors = result[2]
            if errors is not None:
                for i in uncovered():
                    on_error(errors(i))

        def failed(error: Exception) -> None:
            watched.pop(batch, None)
            for _ in uncovered():
                on_error(error)

        batch.produce_future.add_callback(done).add_errback(failed)

    def _give_split_batches_record_futures(self) -> None:
        """Before kafka-python splits a watched batch (the broker found it too large), give
        each of its records without a future one, reporting to the watcher's ``on_error``.

        The split batch's own future is never completed: kafka-python rebinds its record
        futures, by position, to the halves, whose futures then report each record."""
        accumulator = self.client._accumulator
        split = accumulator.split_and_reenqueue
        watched = self._watched
        assert watched is not None

        def split_and_reenqueue(batch: Any, now: float | None = None) -> Any:
            on_error = watched.pop(batch, None)
            if on_error is not None:
                futures: list[Any] = [None] * batch.records.next_offset()
                for future in batch._record_futures:
                    futures[future.args[0]] = future
                for index, future in enumerate(futures):
                    if future is None:
                        futures[index] = FutureRecordMetadata(
                            batch.produce_future, index, None, None, -1, -1, -1
                        ).add_errback(on_error)
                batch._record_futures = futures
            return split(batch, now=now)

        accumulator.split_and_reenqueue = split_and_reenqueue

    def _record_appender(
        self, batch_futures: bool = False, on_batch: Callable[[Any], None] | None = None
    ) -> Callable[..., Any]:
        """``(topic, key, value, partition, headers, timestamp_ms) -> future``, for the bulk
        and the tracked senders.

        Small keyed records go straight to the producer's accumulator, as ``KafkaProducer.send``
        puts them there after its checks (argument types, metadata, partition, record size,
        serializers, transactions), which are made once per topic and partition here instead
        of per record: they cost as much as the append itself. Anything else, and any
        kafka-python version this was not checked against (:mod:`pipeline.shortcuts`), takes
        ``send``.

        ``batch_futures``: a record that fits in its partition's open batch is appended to that
        batch's records (their ``MemoryRecordsBuilder.append``), as the accumulator would, and
        the future returned is the batch's own (see :func:`_acknowledged`): no future per
        record, made on this thread and completed on the IO thread, nor the accumulator's
        bookkeeping per append. A record that needs a new batch takes the accumulator, whose
        future for it is returned (the batch's first record: kafka-python rebinds it if it
        splits the batch). With ``on_batch`` (the bulk sender), a record appended so returns
        None instead, and ``on_batch`` is called with each batch the first time one is.
        """
        client = self.client
        client_send = client.send

        def send_one(
            topic: str,
            key: bytes | None,
            value: bytes,
            partition: int | None,
            headers: Headers | None,
            timestamp_ms: int | None,
        ) -> Any:
            return client_send(
                topic,
                key=key,
                value=value,
                partition=partition,
                headers=headers,
                timestamp_ms=timestamp_ms,
            )

        if not self._may_append():
            return send_one
        accumulator = client._accumulator
        append, wakeup = accumulator.append, client._sender.wakeup
        # What the open-batch append reads of the accumulator (kafka-python 3's; else send()'s
        # path with record futures).
        batch_futures = batch_futures and shortcuts.allowed(
            "kafka-python.open-batch",
            lambda: all(hasattr(accumulator, name) for name in ("_batches", "_tp_lock", "_closed")),
        )
        batches: Any = getattr(accumulator, "_batches", None)
        metadata = client._metadata
        small = min(_SMALL_RECORD, client.config["max_request_size"] // 2)
        partition_counts: dict[str, int] = {}
        # Per partition: its TopicPartition, its lock in the accumulator and the last batch
        # given to on_batch.
        checked: dict[tuple[str, int], list[Any]] = {}
        # Per partition, whether the last append found its batches full. The sender is woken
        # when a batch is created or is first found full, not (as send() does) again for every
        # record appended behind a full batch: it knew of that batch when it was created, and a
        # wakeup per record costs a syscall and a GIL handover once the broker falls behind.
        was_full: dict[TP, bool] = {}

        def append_one(
            topic: str,
            key: bytes | None,
            value: bytes,
            partition: int | None,
            headers: Headers,
            timestamp_ms: int | None,
        ) -> Any:
            count = partition_counts.get(topic)
            if count is None or key is None or len(key) + len(value) > small:
                # The first record of a topic waits for its metadata in send(); an unkeyed one
                # takes the partitioner's choice there.
                future = send_one(topic, key, value, partition, headers, timestamp_ms)
                if count is None:
                    partitions = metadata.partitions_for_topic(topic)
                    if partitions:
                        partition_counts[topic] = len(partitions)
                return future
            if partition is None:
                partition = stable_partition(key, count) if count > 1 else 0
            entry = checked.get((topic, partition))
            if entry is None:
                if partition not in (metadata.partitions_for_topic(topic) or ()):
                    raise ValueError(f"Unrecognized partition {partition} for topic {topic}")
                tp = TP(topic, partition)
                lock = accumulator._tp_lock(tp) if batch_futures else None
                entry = checked[topic, partition] = [tp, lock, None]
            tp = entry[0]
            if batch_futures:
                # The accumulator's own first step, without its future and counters: under
                # the partition's lock (the IO thread drains under it), into the last batch.
                with entry[1]:
                    dq = batches[tp]
                    if dq and not accumulator._closed:
                        batch = dq[-1]
                        appended = batch.records.append(timestamp_ms, key, value, headers)
                        size = 0 if appended is None else appended.size
                        if size:
                            if size > batch.max_record_size:
                                batch.max_record_size = size
                            if on_batch is None:
                                return batch.produce_future
                            if entry[2] is not batch:
                                entry[2] = batch
                                on_batch(batch)
                            return None
            future, full, new_batch, _ = append(tp, timestamp_ms, key, value, headers)
            if new_batch or (full and not was_full.get(tp)):
                wakeup()
            was_full[tp] = full
            return future

        return append_one

    def _may_append(self) -> bool:
        """Whether records may skip ``KafkaProducer.send`` for its accumulator (see
        :meth:`_record_appender`)."""
        client = self.client
        config = client.config
        if (
            config["key_serializer"] is not None
            or config["value_serializer"] is not None
            or type(config["partitioner"]) is not DefaultPartitioner
            or config.get("transactional_id") is not None
        ):
            return False

        def internals() -> bool:
            return (
                hasattr(client._accumulator, "append")
                and hasattr(client._sender, "wakeup")
                and hasattr(client._metadata, "partitions_for_topic")
            )

        return shortcuts.allowed("kafka-python.append", internals)

    def tracked_sender(self) -> _TrackedSender:
        return _TrackedSender(self)

    def flush(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.client.flush(timeout=max(0.0, deadline - time.monotonic()))
                return
            except KafkaTimeoutError as e:
                raise FlushTimeout(str(e)) from None
            except UnknownError as e:
                # A batch the broker found too large was split: kafka-python's flush gives up
                # on the old batch ('Future not done') while its halves are still queued.
                # Flushing again waits for those; the tracked sender resends the old batch's
                # records (duplicates at worst) and keeps a future per record from then on.
                if time.monotonic() >= deadline:
                    raise FlushTimeout(f"flush: {e}") from None

    def abort(self) -> None:
        force_close(self.client)

    def close(self) -> None:
        self.client.close()


def _acknowledged(future: Any) -> bool:
    """Whether the broker acknowledged what ``future`` stands for: one record (kafka-python's
    ``FutureRecordMetadata``) or a batch (its ``FutureProduceResult``, which kafka-python
    completes as a success carrying a function of the records' errors when the batch failed,
    expired or was aborted)."""
    return bool(future.succeeded()) and (
        type(future) is not FutureProduceResult or future.value[2] is None
    )


class _TrackedSender:
    """:class:`pipeline.kafka.transport.TrackedSender`: each record kept with kafka-python's
    future for its batch (or for the record, see :meth:`KafkaPythonProducer._record_appender`),
    no callback added; a record whose future did not succeed is unacknowledged.

    Looking at the futures rather than waiting for their errbacks keeps this exact after an
    abort that could not stop the IO thread in time (a future it left pending counts as not
    acknowledged), and adds no work per record on the IO thread.

    A batch that kafka-python splits (the broker found it too large) never completes its own
    future: only record futures are rebound to the halves. Its records count as not
    acknowledged and are sent again, so once a flush leaves a batch future pending this sender
    keeps a future per record from then on, as the records sent again need.
    """

    barriers = False  # see barrier()

    def __init__(self, producer: KafkaPythonProducer) -> None:
        kept: list[tuple[Any, str, bytes | None, bytes, int | None]] = []
        self._kept = kept
        self._producer = producer
        keep = kept.append
        # One appender, replaced by the per-record one after a split (see the class doc).
        appender = self._appender = [producer._record_appender(batch_futures=True)]
        trim_at = _TRIM_AT
        no_headers: Headers = []

        def trim() -> None:
            nonlocal trim_at
            kept[:] = [k for k in kept if not _acknowledged(k[0])]
            trim_at = max(_TRIM_AT, 2 * len(kept))

        def send(topic: str, key: bytes | None, value: bytes, partition: int | None) -> None:
            future = appender[0](topic, key, value, partition, no_headers, None)
            keep((future, topic, key, value, partition))
            if len(kept) >= trim_at:
                trim()

        self.send: SendOutput = send

    def unacknowledged(self) -> list[Output]:
        missing = []
        split = False
        for f, t, k, v, p in self._kept:
            if not _acknowledged(f):
                missing.append((t, k, v, p))
                split = split or (not f.is_done and type(f) is FutureProduceResult)
        self._kept.clear()
        if split:
            self._appender[0] = self._producer._record_appender()
        return missing

    def barrier(self) -> Barrier | None:
        # None: the writer flushes before it forks. A barrier over kafka-python's futures was
        # built and once, under load, answered "acknowledged" while the broker was stopped
        # (not explained): exactly-once does not rest on it. At the default cadence (5 s) the
        # flush costs kafka-python's writer well under 1% (benchmarks/README.md, issue 22).
        return None


class KafkaPythonTransport:
    """Builds kafka-python clients for one cluster."""

    name = "kafka-python"

    def __init__(self, config: KafkaConfig, bootstrap: str) -> None:
        self.config = config
        self.bootstrap = bootstrap

    def consumer(self, group_id: str | None, **overrides: Any) -> KafkaPythonConsumer:
        return KafkaPythonConsumer(
            make_consumer(self.config, self.bootstrap, group_id, **overrides)
        )

    def producer(self, **overrides: Any) -> KafkaPythonProducer:
        return KafkaPythonProducer(make_producer(self.config, self.bootstrap, **overrides))

    def _admin(self, deadline: float) -> KafkaAdminClient:
        while True:
            try:
                return KafkaAdminClient(**_common(self.config, self.bootstrap))
            except KafkaError as e:
                if time.monotonic() > deadline:
                    raise TransportError(f"cannot reach Kafka at {self.bootstrap}: {e}") from None
                time.sleep(0.2)

    def ensure_topics(self, names: list[str], timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        admin = self._admin(deadline)
        try:
            existing = set(admin.list_topics())
            missing = [n for n in names if n not in existing]
            if missing:
                config = self.config
                topics = [
                    NewTopic(n, config.partitions, config.replication_factor) for n in missing
                ]
                # Another process may create them in between: that is fine.
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics(topics)
                log.info("created topics %s with %d partitions", missing, config.partitions)
            while True:
                described = admin.describe_topics(names)
                if all(t.get("error_code", 0) == 0 and t.get("partitions") for t in described):
                    return
                if time.monotonic() > deadline:
                    raise TransportError(f"topics {names} did not appear in the broker's metadata")
                time.sleep(0.1)
        finally:
            admin.close()

    def delete_topics(self, names: list[str]) -> None:
        admin = self._admin(time.monotonic() + 30.0)
        try:
            existing = set(admin.list_topics())
            gone = [n for n in names if n in existing]
            if gone:
                admin.delete_topics(gone)
        finally:
            admin.close()

    def partition_count(self, topic: str) -> int | None:
        admin = self._admin(time.monotonic() + 30.0)
        try:
            described = admin.describe_topics([topic])
        finally:
            admin.close()
        if not described or described[0].get("error_code", 0) != 0:
            return None
        return len(described[0].get("partitions") or ()) or None
