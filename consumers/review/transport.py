"""The review tools' only Kafka code: read review requests, publish answers as labels.

Every reviewer process reads the whole review-requests topic without a consumer group (claims in
Redis, not partition ownership, decide who answers what), and publishes each answer to the labels
topic with the request's key, on the same partition number (the topics are co-partitioned).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from pipeline.config import KafkaConfig
from pipeline.kafka.clients import force_close, make_consumer, make_producer
from pipeline.schemas import InvalidRecord, ReviewRequest, _decode

log = logging.getLogger(__name__)

# Tansu holds a fetch for the whole fetch_max_wait_ms: keep it short so new requests show soon.
FETCH_MAX_WAIT_MS = 200


@dataclass(frozen=True)
class Delivered:
    """A review request as read from its topic."""

    request: ReviewRequest
    partition: int
    offset: int
    # The record's broker timestamp (wall clock). The request's own times are event time,
    # which in a replay of old data lies far in the past: the time left to answer is measured
    # from when the request was published.
    published_at: float | None = None

    @property
    def requested_at(self) -> float:
        """Wall-clock time of the request (its event time when the broker gave none)."""
        return self.published_at if self.published_at is not None else self.request.requested_at

    @property
    def expires_at(self) -> float | None:
        """Wall-clock deadline: as long after publication as the request allows after its event.

        >>> from pipeline.schemas import ReviewRequest
        >>> request = ReviewRequest(id="e1", pipeline="p", ts=100.0, features={}, task="regression",
        ...     mode="defer", requested_at=100.0, deadline=160.0)
        >>> Delivered(request, 0, 0, published_at=1_700_000_000.0).expires_at
        1700000060.0
        """
        request = self.request
        if request.deadline is None:
            return None
        return self.requested_at + (request.deadline - request.requested_at)


class RequestReader:
    """Reads every partition of the review-requests topic from the beginning, in a thread.

    :meth:`take` hands out what arrived since the last call; :attr:`caught_up` turns true once
    every partition was read to the high watermark its last fetch reported.
    """

    def __init__(self, config: KafkaConfig, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.invalid = 0
        self._consumer: KafkaConsumer = make_consumer(
            config, bootstrap, None, fetch_max_wait_ms=FETCH_MAX_WAIT_MS
        )
        self._lock = threading.Lock()
        self._arrived: list[Delivered] = []
        self._caught_up = False
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._partitions: list[TopicPartition] = []
        self._thread = threading.Thread(target=self._run, name="review-reader", daemon=True)

    def start(self) -> RequestReader:
        self._thread.start()
        return self

    @property
    def caught_up(self) -> bool:
        with self._lock:
            return self._caught_up

    def take(self) -> list[Delivered]:
        with self._lock:
            arrived, self._arrived = self._arrived, []
        return arrived

    def hold(self, full: bool) -> None:
        """Stop fetching while the queue holds as many requests as it may (bounded memory)."""
        if full:
            self._paused.set()
        else:
            self._paused.clear()

    def _assign(self) -> bool:
        partitions = self._consumer.partitions_for_topic(self.topic)
        if not partitions:
            return False
        self._partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(self._partitions)
        self._consumer.seek_to_beginning(*self._partitions)
        return True

    def _run(self) -> None:
        while not self._stop.is_set() and not self._assign():
            self._stop.wait(0.5)
        while not self._stop.is_set():
            if self._paused.is_set():
                self._stop.wait(0.2)
                continue
            try:
                batch = self._consumer.poll(timeout_ms=250)
            except KafkaError as e:  # the broker is away: kafka-python reconnects by itself
                log.warning("reading review requests: %s", e)
                self._stop.wait(1.0)
                continue
            arrived = list(self._decode(batch))
            caught_up = all(
                (high := self._consumer.highwater(tp)) is not None
                and self._consumer.position(tp) >= high
                for tp in self._partitions
            )
            with self._lock:
                self._arrived.extend(arrived)
                self._caught_up = caught_up

    def _decode(self, batch: dict[TopicPartition, list]) -> Iterator[Delivered]:  # type: ignore[type-arg]
        for tp, records in batch.items():
            for record in records:
                try:
                    request: ReviewRequest = _decode(ReviewRequest, record.value)
                except InvalidRecord as e:
                    # Not ours to dead-letter (the pipeline wrote it); skip it, say so once.
                    self.invalid += 1
                    log.warning("review request at %s:%d unreadable: %s", tp, record.offset, e)
                    continue
                stamp = record.timestamp if record.timestamp and record.timestamp > 0 else None
                published = stamp / 1000.0 if stamp is not None else None
                yield Delivered(request, tp.partition, record.offset, published)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self._consumer.close()


class AnswerPublisher:
    """Publishes an answer and returns only once the broker acknowledged it.

    An answer it refused never lands later: the pipeline keeps the first label for an id, so a
    refused answer sent once the broker is back would win over the one the reviewer gave again.
    """

    def __init__(
        self,
        config: KafkaConfig,
        bootstrap: str,
        topic: str,
        timeout_s: float = 30.0,
        **producer_options: Any,
    ) -> None:
        self.topic = topic
        self.timeout_s = timeout_s
        # A producer that does not know the topic yet (a new one, while the broker is away)
        # waits for it in partitions_for and send: no longer than an answer may take.
        options = {"max_block_ms": int(timeout_s * 1000), **producer_options}
        self._open = lambda **known: make_producer(config, bootstrap, **{**options, **known})
        self._producer: KafkaProducer = self._open()
        self._lock = threading.Lock()

    def publish(self, key: bytes, value: bytes, partition: int | None) -> None:
        """Raise :class:`kafka.errors.KafkaError` when the broker did not take it."""
        with self._lock:
            producer = self._producer
            known = producer.partitions_for(self.topic) or set()
            # Same partition number as the request when the labels topic has it; else by key.
            target = partition if partition in known else None
            future = producer.send(self.topic, key=key, value=value, partition=target)
        try:
            future.get(timeout=self.timeout_s)
        except Exception:
            self._replace(producer)
            raise

    def _replace(self, failed: KafkaProducer) -> None:
        # The producer may still hold the record: when this wait gave up first, or while its
        # idempotent producer id is being fetched again (kafka-python does not expire batches
        # then). Dropping the producer fails what it holds; answers in it at once get a 503 too.
        with self._lock:
            if self._producer is failed:
                # The version the broker already told: a new producer asks it first, which
                # blocks for up to 30 s while the broker is away.
                self._producer = self._open(api_version=failed.config["api_version"])
        force_close(failed)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._producer.close(timeout=5)
