"""Outputs that are not lost: every send is tracked until the broker acknowledged it.

kafka-python retries a send for a while, then fails its future, and nobody looks at that future
unless we do; after a broker outage a producer can also stay stuck with batches that never
complete. A checkpoint moves the input offsets past the records whose outputs (predictions, dead
letters) were sent, so it may only be written once all of those are acknowledged. So every
output is kept until its acknowledgement; :meth:`DurableOutputs.flush` sends again what failed,
replaces a producer that stopped answering, and tells the caller when it could not deliver.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from kafka.errors import KafkaTimeoutError

log = logging.getLogger(__name__)

Output = tuple[str, bytes | None, bytes]


class Producer(Protocol):
    def send(self, topic: str, key: bytes | None = ..., value: bytes | None = ...) -> Any: ...

    def flush(self, timeout: float | None = ...) -> None: ...

    def close(self, timeout: float | None = ...) -> None: ...


class DurableOutputs:
    """Send records; :meth:`flush` returns once every one of them was acknowledged.

    >>> class Future:
    ...     def __init__(self, ok):
    ...         self.ok = ok
    ...     def add_callback(self, f, *args):
    ...         if self.ok:
    ...             f(*args, "metadata")
    >>> class FlakyProducer:  # the first send of each record fails, as in a broker outage
    ...     def __init__(self):
    ...         self.delivered, self.seen = [], set()
    ...     def send(self, topic, key=None, value=None):
    ...         ok = value in self.seen
    ...         self.seen.add(value)
    ...         if ok:
    ...             self.delivered.append(value)
    ...         return Future(ok)
    ...     def flush(self, timeout=None):
    ...         pass
    ...     def close(self, timeout=None):
    ...         pass
    >>> producer = FlakyProducer()
    >>> outputs = DurableOutputs(lambda: producer, backoff_s=0.0)
    >>> outputs.send("predictions", b"k", b"v1")
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
        self._lock = threading.Lock()  # callbacks run on the producer's IO thread

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        with self._lock:
            number = self._next
            self._next += 1
            self._pending[number] = (topic, key, value)
        # A failure needs no callback: what is not acknowledged at flush is sent again.
        self.producer.send(topic, key=key, value=value).add_callback(self._acknowledged, number)

    def _acknowledged(self, number: int, _metadata: Any) -> None:
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
                self.producer.flush(timeout=self.flush_timeout_s)
            except KafkaTimeoutError:
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
            for topic, key, value in unacknowledged.values():
                self.send(topic, key, value)

    def _replace_producer(self) -> None:
        old, self.producer = self.producer, self.make_producer()
        # kafka-python's close() flushes first, so it never returns for a stuck producer; its
        # sender's force_close() aborts the stuck batches (their records were sent again here;
        # one that did reach the broker is at worst a duplicate, never a loss).
        sender = getattr(old, "_sender", None)
        with contextlib.suppress(Exception):
            if sender is not None:
                sender.force_close()
            old.close(timeout=1)

    def close(self) -> None:
        with contextlib.suppress(KafkaTimeoutError):
            self.producer.flush(timeout=self.flush_timeout_s)
        self.producer.close()
