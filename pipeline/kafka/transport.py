"""The small Kafka interface the pipeline talks to, and the choice of client behind it.

Two clients implement it: kafka-python (pure Python, the default dependency,
:mod:`pipeline.kafka.kafka_python`) and confluent-kafka (librdkafka, ``riverline[fast]``,
:mod:`pipeline.kafka.confluent`). The consumer, the durable outputs, the replay producer and
topic administration only use what is here, so both give the same semantics: the caller seeks
every assigned partition to its Redis offset, pauses and resumes, reads the lag from fetch high
watermarks, and counts an output as written only once the broker acknowledged it.

``kafka.client: auto`` picks confluent-kafka when it is installed:

>>> resolve_client("kafka-python")
'kafka-python'
>>> resolve_client("auto") in ("confluent", "kafka-python")
True
"""

from __future__ import annotations

import importlib.util
import struct
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Protocol

from pipeline.config import KafkaConfig

Partition = tuple[str, int]  # (topic, partition number)
Headers = list[tuple[str, bytes]]
OnPartitions = Callable[[list[Partition]], None]
# Called once per send: None when the broker acknowledged the record, else the error.
OnDelivery = Callable[[Exception | None], None]
# Called for each record the broker did not acknowledge (successes are not reported).
OnError = Callable[[Exception], None]
# A bulk send: topic, key, value, partition (None: the Java client's murmur2 partition of the
# key, see stable_partition), headers, timestamp in ms.
Send = Callable[[str, bytes, bytes, int | None, Headers, int], None]
# A durable output: topic, key, value, partition (None: the client's partitioner).
Output = tuple[str, bytes | None, bytes, int | None]
SendOutput = Callable[[str, bytes | None, bytes, int | None], None]

# A barrier's check: True once every record sent before it is acknowledged, False once one of
# them failed (the next flush sends it again), None while some are in flight.
Barrier = Callable[[], bool | None]

# After this long a send has succeeded or failed; a flush that takes much longer is stuck.
# kafka-python requires it above linger_ms + request_timeout_ms (30 s by default).
DELIVERY_TIMEOUT_MS = 60_000


class Record(NamedTuple):
    """A consumed record, the same whichever client fetched it.

    >>> r = Record("events", 0, 7, b"k", b"{}", 1_700_000_000_000, [("seq", b"3")])
    >>> r.partition, r.offset, r.headers[0]
    (0, 7, ('seq', b'3'))
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None  # ms
    headers: Headers | None


class TransportError(RuntimeError):
    """The broker did not answer, or refused, a request."""


class FlushTimeout(TransportError):
    """A flush did not complete in time: the producer may be stuck."""


class GroupStuck(TransportError):
    """The consumer group never finished a join: no assignment, not even an empty one."""


class Consumer(Protocol):
    """A group member that reads batches; Redis, not the group, decides where it reads.

    ``on_assigned`` may call :meth:`seek`, :meth:`seek_to_beginning`, :meth:`seek_to_end` and
    :meth:`pause` for the partitions it is given; the read starts there.
    """

    def subscribe(
        self, topics: list[str], on_assigned: OnPartitions, on_revoked: OnPartitions
    ) -> None: ...

    def poll(self, timeout_ms: int) -> dict[Partition, list[Record]]: ...

    def seek(self, partition: Partition, offset: int) -> None: ...

    def seek_to_beginning(self, partition: Partition) -> None: ...

    def seek_to_end(self, partition: Partition) -> None: ...

    def pause(self, partitions: Iterable[Partition]) -> None: ...

    def resume(self, partitions: Iterable[Partition]) -> None: ...

    def assignment(self) -> set[Partition]: ...

    def lag(self, partition: Partition) -> int | None:
        """Records the broker holds past the next one to be returned (high watermark from the
        fetch responses: Tansu answers ListOffsets wrongly); None while unknown."""
        ...

    def commit(self, offsets: dict[Partition, int], wait: bool = False) -> None:
        """Commit group offsets; ``wait`` for the broker's answer (a predictor stopping)."""
        ...

    def broker_answers(self, timeout_s: float) -> bool: ...

    def raise_fetch_wait(self, cap_ms: int) -> int | None:
        """Let each fetch wait longer at the broker (doubled, at most ``cap_ms``): the new wait
        in ms, or None if it cannot be raised (at the cap, or not at run time).

        A broker that answers a fetch with no records once its wait ran out before it read
        its log (Tansu does, and its reads slow down as a partition grows) returns nothing,
        for ever, to a consumer whose wait is shorter than its read.
        """
        ...

    def close(self, leave_group: bool = True) -> None:
        """Close the consumer; ``leave_group`` False lets its membership expire instead.

        A fenced writer's successor may be joining the same group at that moment, and a
        member leaving mid-rebalance can leave a group stuck (the embedded broker does);
        a member whose session expires cannot.
        """
        ...


class TrackedSender(Protocol):
    """Sends records (positional, one thread) and tells which of them the broker did not
    acknowledge, with as little work per record as the client allows: no callback object of
    ours per record, and nothing done per acknowledgement outside the client."""

    send: SendOutput
    barriers: bool  # whether barrier() marks without waiting (else it returns None)

    def unacknowledged(self) -> list[Output]:
        """The records sent since the last call that the broker did not acknowledge (failed,
        or never answered), in the order sent; forgotten here. Exact once the producer's
        :meth:`~Producer.flush` returned, or after its :meth:`~Producer.abort`."""
        ...

    def barrier(self) -> Barrier | None:
        """Marks the records sent so far (an asynchronous checkpoint's snapshot): the check
        returned tells, without waiting, whether the broker acknowledged them all. None where
        the client cannot tell that without waiting (then a checkpoint flushes first)."""
        ...


class Producer(Protocol):
    """Sends records; ``on_delivery`` reports each one's acknowledgement or failure."""

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
    ) -> None: ...

    def sender(self, on_error: OnError) -> Send:
        """A send for a long stream of small records (the replay at full speed): positional
        arguments, only failures reported, and as little work per record as the client allows.
        Each record lands as :meth:`send` would put it, a ``None`` partition being the key's
        :func:`stable_partition`."""
        ...

    def tracked_sender(self) -> TrackedSender:
        """The send of the durable outputs (:mod:`pipeline.kafka.outputs`): at most one per
        producer, whose other sends it does not see."""
        ...

    def flush(self, timeout_s: float) -> None:
        """Wait for every send so far to complete (either way); FlushTimeout if stuck."""
        ...

    def abort(self) -> None:
        """Close without waiting: what is in flight is dropped (a stuck producer), and counted
        as not acknowledged by the tracked sender."""
        ...

    def close(self) -> None: ...


class Transport(Protocol):
    """Builds the clients of one Kafka client library for one cluster."""

    name: str

    def consumer(self, group_id: str | None, **overrides: Any) -> Consumer: ...

    def producer(self, **overrides: Any) -> Producer: ...

    def ensure_topics(self, names: list[str], timeout_s: float = 30.0) -> None:
        """Create the topics that do not exist yet, with the configured partitions."""
        ...

    def delete_topics(self, names: list[str]) -> None: ...

    def partition_count(self, topic: str) -> int | None: ...


def confluent_installed() -> bool:
    return importlib.util.find_spec("confluent_kafka") is not None


def resolve_client(client: str) -> str:
    """``auto`` becomes ``confluent`` when confluent-kafka is importable, else ``kafka-python``."""
    if client == "auto":
        return "confluent" if confluent_installed() else "kafka-python"
    return client


def make_transport(config: KafkaConfig, bootstrap: str) -> Transport:
    """The transport ``kafka.client`` asks for."""
    client = resolve_client(config.client)
    if client == "confluent":
        if not confluent_installed():
            from pipeline.config import ConfigError

            raise ConfigError(
                "invalid configuration:\n  kafka.client: 'confluent' needs confluent-kafka: "
                "pip install 'riverline[fast]'"
            )
        from pipeline.kafka.confluent import ConfluentTransport

        return ConfluentTransport(config, bootstrap)
    from pipeline.kafka.kafka_python import KafkaPythonTransport

    return KafkaPythonTransport(config, bootstrap)


def stable_partition(key: bytes, partitions: int) -> int:
    """The Java client's default partition for a key (murmur2), as kafka-python's and, with
    ``partitioner: murmur2_random``, librdkafka's: a keyed send lands where an explicit one did.

    >>> stable_partition(b"user-1", 3)
    2
    """
    return (murmur2(key) & 0x7FFFFFFF) % partitions


_WORDS = struct.Struct("<I").iter_unpack


def murmur2(data: bytes) -> int:
    """The Java client's ``Utils.murmur2`` (seed 0x9747b28c), unsigned: kafka-python's, with
    the words read by :mod:`struct` rather than byte by byte (two thirds of its time).

    >>> murmur2(b""), murmur2(b"a"), murmur2(b"user-1")
    (275646681, 2731586172, 1404122828)
    """
    m = 0x5BD1E995
    length = len(data)
    h = 0x9747B28C ^ length
    tail = length & ~3
    for (k,) in _WORDS(data[:tail]):
        k = (k * m) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    extra = length & 3
    if extra:
        if extra == 3:
            h ^= data[tail + 2] << 16
        if extra >= 2:
            h ^= data[tail + 1] << 8
        h = ((h ^ data[tail]) * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    return h ^ (h >> 15)
