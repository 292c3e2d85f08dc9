"""Outputs that are not lost: every send is tracked until the broker acknowledged it.

kafka-python retries a send for a while, then fails its future, and nobody looks at that future
unless we do; after a broker outage a producer can also stay stuck with batches that never
complete. A checkpoint moves the input offsets past the records whose outputs (predictions, dead
letters) were sent, so it may only be written once all of those are acknowledged. So
:meth:`DurableOutputs.flush` waits for the producer, sends again what was not acknowledged,
replaces a producer that stopped answering (what it held counts as not acknowledged), and tells
the caller when it could not deliver.

Per record only the client's own work is done: the producer's
:meth:`~pipeline.kafka.transport.Producer.tracked_sender` keeps no object of ours per record and
is asked, at flush, which records the broker did not acknowledge.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pipeline.kafka.transport import (
    Barrier,
    FlushTimeout,
    Output,
    Producer,
    SendOutput,
    TrackedSender,
)

log = logging.getLogger(__name__)

__all__ = ["DurableOutputs", "Output"]


class DurableOutputs:
    """Send records; :meth:`flush` returns once every one of them was acknowledged.

    ``send(topic, key, value, partition=None)`` is the tracked sender's own (rebound when the
    producer is replaced); sends and flushes come from one thread.

    >>> class FlakyProducer:  # the first send of each record fails, as in a broker outage
    ...     def __init__(self):
    ...         self.delivered, self.seen, self.failed = [], set(), []
    ...     def tracked_sender(self):
    ...         return self
    ...     def send(self, topic, key, value, partition=None):
    ...         if value in self.seen:
    ...             self.delivered.append(value)
    ...         else:
    ...             self.failed.append((topic, key, value, partition))
    ...         self.seen.add(value)
    ...     def unacknowledged(self):
    ...         failed, self.failed = self.failed, []
    ...         return failed
    ...     def flush(self, timeout_s):
    ...         pass
    ...     def abort(self):
    ...         pass
    ...     def close(self):
    ...         pass
    >>> producer = FlakyProducer()
    >>> outputs = DurableOutputs(lambda: producer, backoff_s=0.0)
    >>> outputs.send("predictions", b"k", b"v1", 0)
    >>> outputs.flush()
    True
    >>> producer.delivered, outputs.resent
    ([b'v1'], 1)
    """

    send: SendOutput

    def __init__(
        self,
        make_producer: Callable[[], Producer],
        backoff_s: float = 0.5,
        flush_timeout_s: float = 30.0,
    ) -> None:
        self.make_producer = make_producer
        self.backoff_s = backoff_s
        self.flush_timeout_s = flush_timeout_s
        self.resent = 0
        # Known not acknowledged, to be sent again by the next flush.
        self._unacknowledged: list[Output] = []
        self._barriers = 0  # barriers taken so far
        self._flushed_through = 0  # the barriers a flush has since covered
        self._use(make_producer())

    def _use(self, producer: Producer) -> None:
        self.producer = producer
        self._tracked: TrackedSender = producer.tracked_sender()
        self.send = self._tracked.send  # type: ignore[method-assign]

    def flush(self, attempts: int | None = None) -> bool:
        """Block until everything sent so far is acknowledged; False if ``attempts`` ran out.

        ``attempts=None`` retries until the broker takes the records (a running consumer has
        nothing better to do); a stopping one passes a bound and skips its checkpoint instead.
        """
        tried = 0
        while True:
            stuck = False
            try:
                self.producer.flush(self.flush_timeout_s)
            except FlushTimeout:
                stuck = True
                self._replace_producer()
            else:
                self._unacknowledged.extend(self._tracked.unacknowledged())
            if not self._unacknowledged:
                self._flushed_through = self._barriers
                return True
            tried += 1
            if attempts is not None and tried > attempts:
                return False
            log.warning(
                "%d outputs not acknowledged%s: sending them again",
                len(self._unacknowledged),
                " (producer stuck: replaced it)" if stuck else "",
            )
            time.sleep(self.backoff_s)
            again, self._unacknowledged = self._unacknowledged, []
            self.resent += len(again)
            send = self.send
            for topic, key, value, partition in again:
                send(topic, key, value, partition)

    @property
    def marks_without_waiting(self) -> bool:
        """Whether :meth:`barrier` works with this producer's client (confluent-kafka's
        delivery reports; not kafka-python: see its tracked sender)."""
        return self._tracked.barriers

    def barrier(self) -> tuple[int, Barrier]:
        """Mark everything sent so far, without waiting (an asynchronous checkpoint's
        snapshot); :meth:`barrier_acknowledged` tells when the broker holds all of it."""
        self._barriers += 1
        check = self._tracked.barrier()
        if check is None or self._unacknowledged:  # known failed: only a flush resends them
            return self._barriers, lambda: False
        return self._barriers, check

    def barrier_acknowledged(self, barrier: tuple[int, Barrier]) -> bool | None:
        """True once everything sent before ``barrier`` is acknowledged; False if some of it
        failed (a :meth:`flush` sends it again); None while it is in flight."""
        number, check = barrier
        if number <= self._flushed_through:  # a flush since then returned: all acknowledged
            return True
        return check()

    def _replace_producer(self) -> None:
        # Aborted, the stuck producer reports everything it held as not acknowledged: sent again
        # through the new one. One that did reach the broker is at worst a duplicate, never a
        # loss.
        old, tracked = self.producer, self._tracked
        old.abort()
        self._unacknowledged.extend(tracked.unacknowledged())
        self._use(self.make_producer())

    def close(self) -> None:
        try:
            self.producer.flush(self.flush_timeout_s)
        except FlushTimeout:
            self.producer.abort()
            return
        self.producer.close()
