"""Outputs that are not lost: every send is tracked until the broker acknowledged it.

kafka-python retries a send for a while, then fails its future, and nobody looks at that future
unless we do; after a broker outage a producer can also stay stuck with batches that never
complete. A checkpoint moves the input offsets past the records whose outputs (predictions, dead
letters) were sent, so it may only be written once all of those are acknowledged. So every
output is kept until its acknowledgement; :meth:`DurableOutputs.flush` sends again what failed,
replaces a producer that stopped answering, and tells the caller when it could not deliver.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from pipeline.kafka.transport import FlushTimeout, Producer

log = logging.getLogger(__name__)

# topic, key, value, partition (None: the client's partitioner)
Output = tuple[str, bytes | None, bytes, int | None]


class DurableOutputs:
    """Send records; :meth:`flush` returns once every one of them was acknowledged.

    >>> class FlakyProducer:  # the first send of each record fails, as in a broker outage
    ...     def __init__(self):
    ...         self.delivered, self.seen = [], set()
    ...     def send(self, topic, key, value, *, partition=None, on_delivery=None, **_):
    ...         ok = value in self.seen
    ...         self.seen.add(value)
    ...         if ok:
    ...             self.delivered.append(value)
    ...         on_delivery(None if ok else RuntimeError("broker down"))
    ...     def flush(self, timeout_s):
    ...         pass
    ...     def abort(self):
    ...         pass
    ...     def close(self):
    ...         pass
    >>> producer = FlakyProducer()
    >>> outputs = DurableOutputs(lambda: producer, backoff_s=0.0)
    >>> outputs.send("predictions", b"k", b"v1", partition=0)
    >>> outputs.flush()
    True
    >>> producer.delivered, outputs.resent
    ([b'v1'], 1)
    """

    def __init__(
        self,
        make_producer: Callable[[], Producer],
        backoff_s: float = 0.5,
        flush_timeout_s: float = 30.0,
    ) -> None:
        self.make_producer = make_producer
        self.producer = make_producer()
        self.backoff_s = backoff_s
        self.flush_timeout_s = flush_timeout_s
        self.resent = 0
        self._pending: dict[int, Output] = {}
        self._next = 0
        # kafka-python acknowledges on its IO thread; confluent-kafka inside send/flush.
        self._lock = threading.Lock()

    def send(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None = None
    ) -> None:
        with self._lock:
            number = self._next
            self._next += 1
            self._pending[number] = (topic, key, value, partition)
        self.producer.send(
            topic, key, value, partition=partition, on_delivery=_Acknowledge(self, number)
        )

    def _acknowledged(self, number: int) -> None:
        with self._lock:
            self._pending.pop(number, None)

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
            with self._lock:
                unacknowledged, self._pending = self._pending, {}
            if not unacknowledged:
                return True
            tried += 1
            if attempts is not None and tried > attempts:
                with self._lock:
                    self._pending.update(unacknowledged)
                return False
            log.warning(
                "%d outputs not acknowledged%s: sending them again",
                len(unacknowledged),
                " (producer stuck: replacing it)" if stuck else "",
            )
            if stuck:
                self._replace_producer()
            time.sleep(self.backoff_s)
            self.resent += len(unacknowledged)
            for topic, key, value, partition in unacknowledged.values():
                self.send(topic, key, value, partition)

    def _replace_producer(self) -> None:
        # The stuck batches are dropped: their records were sent again here; one that did reach
        # the broker is at worst a duplicate, never a loss.
        old, self.producer = self.producer, self.make_producer()
        old.abort()

    def close(self) -> None:
        try:
            self.producer.flush(self.flush_timeout_s)
        except FlushTimeout:
            self.producer.abort()
            return
        self.producer.close()


class _Acknowledge:
    """A send's delivery report: only an acknowledgement counts (a failure is resent at flush)."""

    __slots__ = ("number", "outputs")

    def __init__(self, outputs: DurableOutputs, number: int) -> None:
        self.outputs, self.number = outputs, number

    def __call__(self, error: Exception | None) -> None:
        if error is None:
            self.outputs._acknowledged(self.number)
