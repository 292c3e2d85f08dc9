"""What a role publishes: predictions, review requests and dead letters, each acknowledged.

Every send goes through :class:`~pipeline.kafka.outputs.DurableOutputs`, so a checkpoint (or,
for a predictor, an offset commit) waits until the broker holds everything it covers.

Nothing sent is larger than ``kafka.max_message_bytes``: a client refuses such a record by
raising, the same record comes back after every restart, and the pipeline would never get past
it. A prediction or review request that does not fit is dead-lettered instead
(``output_too_large``); a dead letter that does not fit keeps its value truncated.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from pipeline.config import Topics
from pipeline.kafka.outputs import DurableOutputs
from pipeline.kafka.records import Origin
from pipeline.kafka.transport import Barrier, Producer
from pipeline.review import ReviewOutput
from pipeline.schemas import (
    DEAD_LETTER_TEXT,
    RECORD_OVERHEAD,
    DeadLetter,
    ReviewRequest,
    encode,
    encode_dead_letter,
)

_NO_ORIGIN = Origin("", -1, -1, None, None, None)


class Outputs:
    """The topics a role writes to, over one durable producer.

    Predictions go to the event's own partition number when the predictions topic has it
    (co-partitioned: a learner reading predictions and labels finds them on the same number).
    """

    def __init__(
        self,
        make_producer: Callable[[], Producer],
        topics: Topics,
        pipeline: str,
        prediction_partitions: int,
        flush_timeout_s: float,
        max_message_bytes: int = 1_000_000,
    ) -> None:
        self.durable = DurableOutputs(make_producer, flush_timeout_s=flush_timeout_s)
        self.topics = topics
        self.pipeline = pipeline
        self.prediction_partitions = prediction_partitions
        self.published = 0  # predictions
        self.max_message_bytes = max_message_bytes
        # Key and value together at most this: the rest is the record's own framing.
        self.max_payload = max_message_bytes - RECORD_OVERHEAD

    def prediction(
        self, key: bytes, payload: bytes, partition: int, origin: Origin | None = None
    ) -> bool:
        """Publish a prediction; False if it was too large and ``origin`` dead-lettered."""
        if len(key) + len(payload) > self.max_payload:
            self._too_large("prediction", key, payload, origin)
            return False
        self.durable.send(
            self.topics.predictions,
            key,
            payload,
            partition if partition < self.prediction_partitions else None,
        )
        self.published += 1
        return True

    def _too_large(self, what: str, key: bytes, payload: bytes, origin: Origin | None) -> None:
        self.dead_letter(
            origin,
            "output_too_large",
            f"the {what} for this record is {len(key) + len(payload)} bytes (key and value); "
            f"kafka.max_message_bytes is {self.max_message_bytes}",
        )

    def review(self, outputs: list[ReviewOutput]) -> int:
        """Review requests, and the predictions the review loop serves (held, human, deadline).

        Keyed like their event, so with as many partitions as the events topic a request lands
        on the event's partition number. Returns how many were too large (dead-lettered).
        """
        refused = 0
        for out in outputs:
            key, value = out.key.encode(), encode(out.record)
            request = isinstance(out.record, ReviewRequest)
            topic = self.topics.review_requests if request else self.topics.predictions
            if len(key) + len(value) > self.max_payload:
                # Not tied to the record being processed: the output itself is what is kept.
                what = "review request" if request else "prediction"
                self._too_large(what, key, value, Origin(topic, -1, -1, None, key, value))
                refused += 1
                continue
            if not request:
                self.published += 1
            self.durable.send(topic, key, value, None)
        return refused

    def dead_letter(self, origin: Origin | None, reason: str, message: str) -> None:
        """Publish an unusable record, with its reason and original bytes (as many as fit)."""
        origin = origin or _NO_ORIGIN
        key = origin.key
        if key is not None and len(key) > DEAD_LETTER_TEXT:
            # Keyed by the key's digest: the same key still lands on the same partition.
            key = hashlib.sha256(key).hexdigest().encode("ascii")
        letter = DeadLetter.of(
            reason,
            message,
            topic=origin.topic,
            partition=origin.partition,
            offset=origin.offset,
            timestamp=origin.timestamp,
            key=origin.key,
            value=origin.value,
            rejected_at=time.time(),
            pipeline=self.pipeline,
        )
        value = encode_dead_letter(letter, key, origin.value, self.max_message_bytes)
        self.durable.send(self.topics.dead_letters, key, value, None)

    @property
    def marks_without_waiting(self) -> bool:
        return self.durable.marks_without_waiting

    def barrier(self) -> tuple[int, Barrier]:
        """Mark every send so far (see :meth:`DurableOutputs.barrier`)."""
        return self.durable.barrier()

    def barrier_acknowledged(self, barrier: tuple[int, Barrier]) -> bool | None:
        return self.durable.barrier_acknowledged(barrier)

    def flush(self, attempts: int | None = None) -> bool:
        """True once the broker acknowledged every send so far."""
        return self.durable.flush(attempts=attempts)

    def close(self) -> None:
        self.durable.close()
