"""The confluent-kafka transport: librdkafka, ``pip install 'riverline[fast]'``.

Differences from kafka-python that this module hides:

- Rebalance callbacks run inside :meth:`poll`, on the caller's thread. The start offsets are
  given in the callback with ``assign()``: a seek before the assignment exists is refused.
- librdkafka's ``position()`` is unknown until a record was returned, so the position used for
  the lag is kept here: the start offset, then one past the last record returned.
- Delivery reports are served by ``poll()``/``flush()`` on the caller's thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

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
)

log = logging.getLogger(__name__)

# kafka-python option names (as tests, benchmarks and client_options use them) -> librdkafka.
_NAMES = {
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
    "ssl_password": "ssl.key.password",
    "client_id": "client.id",
    "request_timeout_ms": "request.timeout.ms",
    "delivery_timeout_ms": "delivery.timeout.ms",
    "linger_ms": "linger.ms",
    "batch_size": "batch.size",
    "fetch_max_wait_ms": "fetch.wait.max.ms",
    "fetch_max_bytes": "fetch.max.bytes",
    "fetch_min_bytes": "fetch.min.bytes",
    "max_partition_fetch_bytes": "max.partition.fetch.bytes",
    "session_timeout_ms": "session.timeout.ms",
    "heartbeat_interval_ms": "heartbeat.interval.ms",
    "max_poll_interval_ms": "max.poll.interval.ms",
    "reconnect_backoff_ms": "reconnect.backoff.ms",
    "reconnect_backoff_max_ms": "reconnect.backoff.max.ms",
    "retry_backoff_ms": "retry.backoff.ms",
    "acks": "acks",
    "auto_offset_reset": "auto.offset.reset",
    "check_crcs": "check.crcs",
}
# kafka-python settings with no librdkafka meaning here (max_poll_records is a batch size).
_IGNORED = {"max_poll_records", "api_version", "retries"}
# kafka.fetch_max_wait_ms when unset: a fetch round trip costs librdkafka next to nothing (idle,
# on Tansu, which holds every fetch this long: 1.2% of a core at 5 ms, 0.8% at 10), and at a
# paced 1,000 ev/s p50 fell from ~5.6 to ~5.0 ms (benchmarks/README.md).
FETCH_MAX_WAIT_MS = 5


def translate(options: dict[str, Any]) -> dict[str, Any]:
    """kafka-python option names to librdkafka ones; dotted names pass unchanged.

    >>> translate({"security_protocol": "SSL", "linger.ms": 2, "max_poll_records": 10})
    {'security.protocol': 'SSL', 'linger.ms': 2}
    """
    out: dict[str, Any] = {}
    for name, value in options.items():
        if name in _IGNORED:
            continue
        if "." in name:
            out[name] = value
        elif name in _NAMES:
            out[_NAMES[name]] = value
        else:
            raise TransportError(f"kafka option {name!r} has no confluent-kafka equivalent")
    return out


def _common(config: KafkaConfig, bootstrap: str) -> dict[str, Any]:
    # librdkafka's own log lines go through Python logging rather than straight to stderr.
    return {
        "bootstrap.servers": bootstrap,
        "logger": _librdkafka_log,
        **translate(config.client_options),
    }


_librdkafka_log = logging.getLogger("librdkafka")


_tuple_new = tuple.__new__  # Record's own __new__ is a Python function: one call more


class ConfluentConsumer:
    """:class:`pipeline.kafka.transport.Consumer` on librdkafka's consumer."""

    def __init__(self, config: KafkaConfig, bootstrap: str, group_id: str | None, **overrides: Any):
        self.batch = int(overrides.get("max_poll_records", config.max_poll_records))
        options: dict[str, Any] = {
            "group.id": group_id or "riverline-unused",
            "enable.auto.commit": False,  # Redis checkpoints are the source of truth
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,  # tells where a partition ends: see lag()
            "auto.offset.reset": config.reset_policy,
            "session.timeout.ms": config.session_timeout_ms,
            "heartbeat.interval.ms": config.heartbeat_interval_ms,
            "max.poll.interval.ms": config.max_poll_interval_ms,
            "max.partition.fetch.bytes": config.max_partition_fetch_bytes,
            "fetch.wait.max.ms": config.fetch_wait_ms(FETCH_MAX_WAIT_MS),
            # Eager rebalancing, as kafka-python: every assignment is given whole, then seeked.
            "partition.assignment.strategy": "range",
            **_common(config, bootstrap),
            **translate(overrides),
        }
        self.client = Consumer(options)
        self._assigned: set[Partition] = set()
        # Next offset to be returned, kept here: librdkafka's is unknown until a record came.
        self._position: dict[Partition, int | None] = {}
        self._starts: dict[Partition, int] | None = None  # collected inside on_assigned
        self._from_group: set[Partition] = set()
        self._paused_in_assign: list[Partition] = []
        self._on_assigned: OnPartitions | None = None
        self._on_revoked: OnPartitions | None = None

    def subscribe(
        self, topics: list[str], on_assigned: OnPartitions, on_revoked: OnPartitions
    ) -> None:
        self._on_assigned, self._on_revoked = on_assigned, on_revoked
        self.client.subscribe(topics, on_assign=self._assign, on_revoke=self._revoke)

    def _assign(self, client: Consumer, partitions: list[TopicPartition]) -> None:
        given = [(tp.topic, tp.partition) for tp in partitions]
        self._starts, self._paused_in_assign = {}, []
        try:
            assert self._on_assigned is not None
            self._on_assigned(given)
            starts = self._starts
        finally:
            self._starts = None
        self._assigned = set(given)
        # Partitions not seeked start at the group's committed offset (a predictor's).
        self._from_group = {p for p in given if p not in starts}
        self._position = {p: (o if o >= 0 else None) for p, o in starts.items()}
        for p in given:
            self._position.setdefault(p, None)
        # An offset left unset falls back to the group's committed one, then auto.offset.reset.
        client.assign([TopicPartition(t, n, starts.get((t, n), -1001)) for t, n in given])
        if self._paused_in_assign:
            client.pause([TopicPartition(*p) for p in self._paused_in_assign])

    def _revoke(self, client: Consumer, partitions: list[TopicPartition]) -> None:
        gone = [(tp.topic, tp.partition) for tp in partitions]
        assert self._on_revoked is not None
        self._on_revoked(gone)
        client.unassign()
        self._assigned.clear()
        self._position.clear()
        self._from_group.clear()

    def poll(self, timeout_ms: int) -> dict[Partition, list[Record]]:
        # consume() with a timeout waits for a full batch: take what is there, else wait for one.
        messages = self.client.consume(self.batch, 0)
        if not messages:
            first = self.client.poll(timeout_ms / 1000)
            if first is None:
                return {}
            messages = [first]
            if self.batch > 1:
                messages.extend(self.client.consume(self.batch - 1, 0))
        batches: dict[Partition, list[Record]] = {}
        # A batch comes in runs of one partition's messages: the run's list is kept at hand.
        topic: str | None = None
        number = -1
        records: list[Record] = []
        for m in messages:
            error = m.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    # At the end: the position is known even if nothing came since the
                    # assignment (a partition started at the group's committed offset).
                    at = (m.topic(), m.partition())
                    if at in self._assigned:
                        self._position[at] = m.offset()
                else:
                    log.warning("fetch error: %s", error)
                continue
            # A consumed message always has its topic, partition and offset; headers come as a
            # list.
            kind, ts = m.timestamp()
            record = _tuple_new(
                Record,
                (
                    m.topic(),
                    m.partition(),
                    m.offset(),
                    m.key(),
                    m.value(),
                    ts if kind else None,
                    m.headers(),
                ),
            )
            if record[1] != number or record[0] != topic:
                topic, number = record[0], record[1]
                partition = (topic, number)
                records = batches.get(partition)  # type: ignore[assignment]
                if records is None:
                    records = batches[partition] = []
            records.append(record)
        for partition, records in batches.items():
            self._position[partition] = records[-1].offset + 1
        return batches

    def _seek(self, partition: Partition, offset: int) -> None:
        if self._starts is not None:
            self._starts[partition] = offset
            return
        self.client.seek(TopicPartition(partition[0], partition[1], offset))
        self._position[partition] = offset if offset >= 0 else None

    def seek(self, partition: Partition, offset: int) -> None:
        self._seek(partition, offset)

    def seek_to_beginning(self, partition: Partition) -> None:
        self._seek(partition, OFFSET_BEGINNING)

    def seek_to_end(self, partition: Partition) -> None:
        self._seek(partition, OFFSET_END)

    def pause(self, partitions: Iterable[Partition]) -> None:
        wanted = list(partitions)
        if self._starts is not None:
            self._paused_in_assign.extend(wanted)
        elif wanted:
            self.client.pause([TopicPartition(*p) for p in wanted])

    def resume(self, partitions: Iterable[Partition]) -> None:
        wanted = [TopicPartition(*p) for p in partitions]
        if wanted:
            self.client.resume(wanted)

    def assignment(self) -> set[Partition]:
        return set(self._assigned)

    def lag(self, partition: Partition) -> int | None:
        # Cached: the high watermark of the last fetch response (no ListOffsets request).
        low, high = self.client.get_watermark_offsets(TopicPartition(*partition), cached=True)
        if high < 0:
            return None
        position = self._position.get(partition)
        if position is None and partition in self._from_group:
            position = self._committed(partition)
        if position is None:
            # Nothing returned yet from a logical start (beginning or end): the log start is
            # where beginning reads from; 0 when librdkafka has not learnt it.
            return max(0, high - max(low, 0))
        return max(0, high - position)

    def _committed(self, partition: Partition) -> int | None:
        """Where a partition left to the group starts: its committed offset, asked once."""
        try:
            (tp,) = self.client.committed([TopicPartition(*partition)], timeout=5.0)
        except KafkaException as e:
            log.warning("could not read the committed offset of %s: %s", partition, e)
            return None  # asked again at the next lag
        self._from_group.discard(partition)
        if tp.offset < 0:
            return None  # nothing committed: the reset policy's start, as for a logical one
        self._position.setdefault(partition, tp.offset)
        return self._position[partition]

    def commit(self, offsets: dict[Partition, int], wait: bool = False) -> None:
        # Asynchronous unless asked: a synchronous commit waits through a rebalance or a
        # coordinator change, and a writer's offsets only feed lag monitoring (Redis holds
        # the real ones); a predictor waits for its last one before closing.
        given = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        if wait:
            self.client.commit(offsets=given, asynchronous=False)
        else:
            self.client.commit(offsets=given, asynchronous=True)

    def broker_answers(self, timeout_s: float) -> bool:
        topics = {t for t, _ in self._assigned}
        if not topics:
            return False
        try:
            for topic in topics:
                self.client.list_topics(topic, timeout=timeout_s)
        except KafkaException as e:
            log.warning("the broker does not answer (%s): waiting for it", e)
            return False
        return True

    def raise_fetch_wait(self, cap_ms: int) -> int | None:
        # librdkafka takes fetch.wait.max.ms at creation only: the caller warns instead.
        return None

    def close(self, leave_group: bool = True) -> None:
        # librdkafka always leaves on close (only static members do not): ``leave_group`` is
        # not honoured here.
        self.client.close()


def _queued(client: Producer, unserved: list[int]) -> Callable[..., None]:
    """``client.produce(...)`` that waits out a full local queue (letting delivery reports drain
    it) and serves delivery reports every 1,000 records: every send path of a producer goes
    through one of these or counts in ``unserved`` as they do, so they share one count."""
    produce, poll = client.produce, client.poll

    def produce_one(*args: Any, **kwargs: Any) -> None:
        while True:
            try:
                produce(*args, **kwargs)
                break
            except BufferError:
                poll(0.05)  # the local queue is full: let deliveries drain it
        unserved[0] += 1
        if unserved[0] >= 1000:
            unserved[0] = 0
            poll(0)  # serve delivery reports as we go

    return produce_one


class ConfluentProducer:
    """:class:`pipeline.kafka.transport.Producer` on librdkafka's producer."""

    def __init__(self, config: KafkaConfig, bootstrap: str, **overrides: Any) -> None:
        options: dict[str, Any] = {
            "acks": "all",
            "linger.ms": config.linger_ms,
            "batch.size": config.batch_bytes,
            # What riverline bounds its outputs by (pipeline.schemas.RECORD_OVERHEAD below it).
            "message.max.bytes": config.max_message_bytes,
            # Order kept across retries without idempotence (not every broker supports it).
            "max.in.flight.requests.per.connection": 1,
            "delivery.timeout.ms": DELIVERY_TIMEOUT_MS,
            "queue.buffering.max.messages": 1_000_000,
            # Keyed sends go where the Java client and kafka-python put them (not librdkafka's
            # CRC32 default), so every client and the replay agree on a key's partition.
            "partitioner": "murmur2_random",
            **_common(config, bootstrap),
            **translate(overrides),
        }
        self.client = Producer(options)
        self._unserved = [0]  # records produced since delivery reports were last served
        self._produce = _queued(self.client, self._unserved)

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
        callback = None if on_delivery is None else _Report(on_delivery)
        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": callback}
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = headers
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        self._produce(topic, **kwargs)

    def sender(self, on_error: OnError) -> Send:
        # One delivery callback for every record, and no partition computed in Python: for a key
        # without an explicit partition, librdkafka's murmur2_random is the Java client's murmur2.
        # produce() positionally: its keywords cost a third of its time. The order is its C
        # keyword list's, unchanged since headers came (topic, value, key, partition, callback,
        # on_delivery, timestamp, headers).
        produce = self._produce
        report = _ErrorReport(on_error)

        def send(
            topic: str,
            key: bytes,
            value: bytes,
            partition: int | None,
            headers: Headers,
            timestamp_ms: int,
        ) -> None:
            at = -1 if partition is None else partition
            produce(topic, value, key, at, report, None, timestamp_ms, headers)

        return send

    def tracked_sender(self) -> _TrackedSender:
        return _TrackedSender(self.client, self._produce, self._unserved)

    def flush(self, timeout_s: float) -> None:
        left = self.client.flush(timeout_s)
        if left:
            raise FlushTimeout(f"{left} records still in flight after {timeout_s:.0f}s")

    def abort(self) -> None:
        # Every record still queued or in flight gets its delivery report, failed with
        # _PURGE_QUEUE or _PURGE_INFLIGHT, served by this flush: a tracked sender then knows
        # every record it must send again.
        self.client.purge(in_queue=True, in_flight=True, blocking=True)
        self.client.flush(_PURGED_REPORTS_S)

    def close(self) -> None:
        self.client.flush(30)


# Serving the delivery reports of purged records takes milliseconds; this only bounds it.
_PURGED_REPORTS_S = 30.0


class _TrackedSender:
    """:class:`pipeline.kafka.transport.TrackedSender`: one delivery callback for the records
    between two barriers, a failed record read back from its report (an acknowledgement costs
    one call and a count).

    Every record produced gets exactly one delivery report, served by ``poll``/``flush`` on this
    thread; so once the producer holds nothing (a flush returned, or a purge's reports were
    served) the failures collected are all the records not acknowledged. A barrier closes the
    current epoch: it holds once every epoch up to it has as many reports as records.
    """

    barriers = True

    def __init__(self, client: Producer, queued: Callable[..., None], unserved: list[int]) -> None:
        self._client = client
        self._failed: list[Output] = []
        self._epochs: list[_Epoch] = []  # closed by barriers, not known all acknowledged

        # produce() positionally (its keywords cost a third of its time): topic, value, key,
        # partition, callback. Called directly, not through ``queued`` (its call and argument
        # packing were a third of a send's time), which only steps in when the local queue is
        # full; the record is counted as ``queued`` counts it.
        produce, poll = client.produce, client.poll
        current = [_Epoch(self._failed)]  # the next record's epoch (a barrier moves it)
        self._current = current

        def send(topic: str, key: bytes | None, value: bytes, partition: int | None) -> None:
            at = -1 if partition is None else partition
            epoch = current[0]
            try:
                produce(topic, value, key, at, epoch.report)
            except BufferError:
                queued(topic, value, key, at, epoch.report)  # waits for room; counts the record
            else:
                unserved[0] += 1
                if unserved[0] >= 1000:
                    unserved[0] = 0
                    poll(0)  # serve delivery reports as we go
            epoch.sent += 1

        self.send: SendOutput = send

    def unacknowledged(self) -> list[Output]:
        left = len(self._client)
        if left:
            # Not reported yet, so neither known delivered nor known failed: never guessed.
            raise TransportError(f"{left} records neither acknowledged nor reported failed")
        failed = self._failed[:]
        del self._failed[:]
        # All reported, the failures handed over: DurableOutputs knows its barriers are past,
        # and the records sent from now on start clean.
        self._epochs.clear()
        self._current[0] = _Epoch(self._failed)
        return failed

    def barrier(self) -> Barrier:
        closed = self._current[0]
        self._current[0] = _Epoch(self._failed)
        # What the barrier waits for: this epoch and every earlier one still unreported or
        # with failures not yet sent again (unacknowledged() hands those over and clears this).
        pending = [e for e in self._epochs if e.failures or not e.settled()] + [closed]
        self._epochs[:] = pending
        poll = self._client.poll

        def acknowledged() -> bool | None:
            poll(0)  # serve the reports that arrived
            if any(e.failures for e in pending):
                return False
            return True if all(e.settled() for e in pending) else None

        return acknowledged


class _Epoch:
    """The records sent between two barriers: how many, and how many were reported."""

    __slots__ = ("failures", "report", "reported", "sent")

    def __init__(self, failed: list[Output]) -> None:
        self.sent = self.reported = self.failures = 0

        def report(error: KafkaError | None, message: Message) -> None:
            self.reported += 1
            if error is not None:
                self.failures += 1
                at = message.partition()  # -1: failed before its partition was chosen
                if at is not None and at < 0:
                    at = None
                # A produced message has its topic and value.
                failed.append((message.topic(), message.key(), message.value(), at))  # type: ignore[arg-type]

        self.report = report

    def settled(self) -> bool:
        return self.reported >= self.sent


class _Report:
    """librdkafka's delivery callback -> :data:`OnDelivery` (None when acknowledged)."""

    __slots__ = ("callback",)

    def __init__(self, callback: OnDelivery) -> None:
        self.callback = callback

    def __call__(self, error: KafkaError | None, _message: Message) -> None:
        self.callback(None if error is None else KafkaException(error))


class _ErrorReport:
    """librdkafka's delivery callback -> :data:`OnError`, for failures only."""

    __slots__ = ("callback",)

    def __init__(self, callback: OnError) -> None:
        self.callback = callback

    def __call__(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self.callback(KafkaException(error))


class ConfluentTransport:
    """Builds confluent-kafka clients for one cluster."""

    name = "confluent"

    def __init__(self, config: KafkaConfig, bootstrap: str) -> None:
        self.config = config
        self.bootstrap = bootstrap

    def consumer(self, group_id: str | None, **overrides: Any) -> ConfluentConsumer:
        return ConfluentConsumer(self.config, self.bootstrap, group_id, **overrides)

    def producer(self, **overrides: Any) -> ConfluentProducer:
        return ConfluentProducer(self.config, self.bootstrap, **overrides)

    def _admin(self) -> AdminClient:
        return AdminClient(_common(self.config, self.bootstrap))

    def _metadata(self, admin: AdminClient, deadline: float) -> Any:
        while True:
            try:
                return admin.list_topics(timeout=max(0.5, min(5.0, deadline - time.monotonic())))
            except KafkaException as e:
                if time.monotonic() > deadline:
                    raise TransportError(f"cannot reach Kafka at {self.bootstrap}: {e}") from None
                time.sleep(0.2)

    def ensure_topics(self, names: list[str], timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        admin = self._admin()
        existing = self._metadata(admin, deadline).topics
        missing = [n for n in names if n not in existing]
        if missing:
            config = self.config
            futures = admin.create_topics(
                [NewTopic(n, config.partitions, config.replication_factor) for n in missing]
            )
            for name, future in futures.items():
                try:
                    future.result(timeout=max(1.0, deadline - time.monotonic()))
                except KafkaException as e:
                    # Another process may create it in between: that is fine.
                    if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise TransportError(f"cannot create topic {name}: {e}") from None
            log.info("created topics %s with %d partitions", missing, config.partitions)
        while True:
            topics = self._metadata(admin, deadline).topics
            if all(n in topics and topics[n].error is None and topics[n].partitions for n in names):
                return
            if time.monotonic() > deadline:
                raise TransportError(f"topics {names} did not appear in the broker's metadata")
            time.sleep(0.1)

    def delete_topics(self, names: list[str]) -> None:
        admin = self._admin()
        existing = self._metadata(admin, time.monotonic() + 30.0).topics
        gone = [n for n in names if n in existing]
        if gone:
            for future in admin.delete_topics(gone).values():
                future.result(timeout=30)

    def partition_count(self, topic: str) -> int | None:
        topics = self._metadata(self._admin(), time.monotonic() + 30.0).topics
        found = topics.get(topic)
        if found is None or found.error is not None:
            return None
        return len(found.partitions) or None
