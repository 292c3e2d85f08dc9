"""``riverline learner``: the single writer of a split deployment.

It composes the same parts as ``run`` (lease, checkpoints, inputs, processing, outputs, status)
but publishes no prediction: predictors do, on the model versions it publishes to Redis. It
reads the predictions topic too, so its ``served`` metrics are those of what was actually
published (:mod:`pipeline.served`); the model and fallback stay prequential as in ``run``.
"""

from __future__ import annotations

import logging
from typing import Any

from consumers.model_publisher import ModelPublisher
from consumers.writer import Writer
from pipeline.kafka.records import KIND_EVENT, KIND_LABEL, KIND_PREDICTION

log = logging.getLogger(__name__)


class Learner(Writer):
    """Learns, evaluates, gates, checkpoints and publishes model versions."""

    serves = False
    role = "learner"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.publisher = ModelPublisher(self.store.client, self.config)

    def input_kinds(self) -> dict[str, str]:
        t = self.topics
        return {t.events: KIND_EVENT, t.labels: KIND_LABEL, t.predictions: KIND_PREDICTION}

    def never_wait(self, partition: object) -> bool:
        # Predictions are joined by id in any order: waiting for them would only slow learning.
        return isinstance(partition, tuple) and partition[0] == self.topics.predictions

    def output_topics(self) -> list[str]:
        return [self.topics.dead_letters]

    def on_started(self) -> None:
        self.core.enable_published_scoring(self.config.join.max_pending or 100_000)
        assert self.processor is not None
        self.processor.on_decision = self._decided
        # After a restart the predictors may hold an older version than the restored state.
        self.publisher.publish(self.core, self.offsets, self.lock, self.ownership.token, "start")

    def _decided(self, _decision: object) -> None:
        self.publisher.decided = True
        # Published at the decision's own label (README, "Scaling out"), not after the rest
        # of the fetched batch: the drain stops after this record.
        self.stop_drain = True

    def between_records(self) -> None:
        if self.publisher.decided:
            self.publisher.publish(
                self.core, self.offsets, self.lock, self.ownership.token, "decision"
            )

    def after_checkpoint(self, version: int) -> None:
        # The checkpointed state is the newest one: predictors (restarting ones too) get it.
        if self.core.model_version != self.publisher.last_version:
            self.publisher.publish(
                self.core, self.offsets, self.lock, self.ownership.token, "checkpoint"
            )

    def loop_tick(self, now: float) -> None:
        if self.publisher.due(self.core.model_version, now):
            self.publisher.publish(
                self.core, self.offsets, self.lock, self.ownership.token, "cadence"
            )

    def report(self) -> dict[str, Any]:
        report = super().report()
        report["run"]["model_versions_published"] = self.publisher.published
        report["run"]["last_model_version"] = self.publisher.last_version
        return report
