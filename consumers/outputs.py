"""What a role publishes: predictions, review requests and dead letters, each acknowledged.

Every send goes through :class:`~pipeline.kafka.outputs.DurableOutputs`, so a checkpoint (or,
for a predictor, an offset commit) waits until the broker holds everything it covers.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pipeline.config import Topics
from pipeline.kafka.outputs import DurableOutputs
from pipeline.kafka.records import Origin
from pipeline.kafka.transport import Producer
from pipeline.review import ReviewOutput
from pipeline.schemas import DeadLetter, ReviewRequest, encode

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
    ) -> None:
        self.durable = DurableOutputs(make_producer, flush_timeout_s=flush_timeout_s)
        self.topics = topics
        self.pipeline = pipeline
        self.prediction_partitions = prediction_partitions
        self.published = 0  # predictions

    def prediction(self, key: bytes, payload: bytes, partition: int) -> None:
        self.durable.send(
            self.topics.predictions,
            key,
            payload,
            partition if partition < self.prediction_partitions else None,
        )
        self.published += 1

    def review(self, outputs: list[ReviewOutput]) -> None:
        """Review requests, and the predictions the review loop serves (held, human, deadline).

        Keyed like their event, so with as many partitions as the events topic a request lands
        on the event's partition number.
        """
        for out in outputs:
            if isinstance(out.record, ReviewRequest):
                topic = self.topics.review_requests
            else:
                topic = self.topics.predictions
                self.published += 1
            self.durable.send(topic, out.key.encode(), encode(out.record), None)

    def dead_letter(self, origin: Origin | None, reason: str, message: str) -> None:
        """Publish an unusable record, with its reason and original bytes."""
        origin = origin or _NO_ORIGIN
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
        self.durable.send(self.topics.dead_letters, origin.key, encode(letter), None)

    def flush(self, attempts: int | None = None) -> bool:
        """True once the broker acknowledged every send so far."""
        return self.durable.flush(attempts=attempts)

    def close(self) -> None:
        self.durable.close()
