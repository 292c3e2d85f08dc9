"""One record through the learning core, and what it leads to on the outputs.

This is the per-record hot path of ``run`` and ``learner``: keep it free of lookups and objects
that could be made once.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING

import redis
from kafka.errors import KafkaError

from consumers.outputs import Outputs
from pipeline.checkpointing.trust import CheckpointError
from pipeline.config import RiverlineConfig
from pipeline.core import LearningCore, Outcome
from pipeline.gating import Decision
from pipeline.kafka.records import EVENT_ORIGINS, KIND_EVENT, KIND_PREDICTION, Incoming
from pipeline.kafka.transport import TransportError
from pipeline.ordering import Item
from pipeline.schemas import DEAD_LETTER_TEXT, Event, InvalidRecord, Label
from pipeline.served import Published
from pipeline.state.lease import LeaseLost
from pipeline.telemetry import LatencyHistogram, PipelineMetrics

if TYPE_CHECKING:
    from pipeline.serving.predictor_core import ServingCore

log = logging.getLogger(__name__)

PROCESSING_ERROR = "processing_error"
OUTPUT_TOO_LARGE = "output_too_large"
# Faults of what the pipeline stands on, not of one record: these stop a role (the next start
# goes on from the last checkpoint), everything else a record raises is dead-lettered.
_INFRASTRUCTURE: tuple[type[BaseException], ...] = (
    redis.RedisError,
    KafkaError,
    TransportError,
    LeaseLost,
    CheckpointError,
    MemoryError,
)


def is_infrastructure(error: BaseException) -> bool:
    """Whether ``error`` is a Kafka, Redis, fencing (or memory) fault rather than one record's.

    >>> is_infrastructure(redis.ConnectionError("reset")), is_infrastructure(KeyError("x"))
    (True, False)
    """
    if isinstance(error, _INFRASTRUCTURE):
        return True
    # confluent-kafka's errors (optional dependency): KafkaException, KafkaError and the rest.
    return type(error).__module__.startswith("confluent_kafka")


class FailureLog:
    """Logs records that raised: the first with its traceback, then at counts 10, 100, ...
    (a stream where every record fails must not flood the log)."""

    def __init__(self, pipeline: str) -> None:
        self.pipeline = pipeline
        self.count = 0
        self._next = 1

    def note(self, incoming: Incoming, error: Exception) -> str:
        """Count and maybe log ``error``; returns the dead letter's message."""
        self.count += 1
        message = f"{type(error).__name__}: {error}"[:DEAD_LETTER_TEXT]
        if self.count >= self._next:
            self._next *= 10
            log.error(
                "pipeline %s: a record raised while processed (%d so far), dead-lettered as "
                "%s and skipped: %s (at %s)",
                self.pipeline,
                self.count,
                PROCESSING_ERROR,
                message[:500],
                incoming.origin[:3],
                exc_info=error if self.count == 1 else None,
            )
        return message


class RecordProcessor:
    """Feeds the core events and labels, and sends what it serves and rejects.

    ``serve`` is False for a learner: it predicts every event (the model is scored
    prequentially) but publishes no prediction, and leaves dead-lettering invalid events to the
    predictors, which read the same events.
    """

    def __init__(
        self,
        core: LearningCore,
        outputs: Outputs,
        metrics: PipelineMetrics,
        config: RiverlineConfig,
        on_learned: Callable[[int], None],
        *,
        serve: bool = True,
    ) -> None:
        self.core = core
        # Pending events keep their features, not their records' bytes as well.
        core.keep_origins(EVENT_ORIGINS)
        self.outputs = outputs
        self.metrics = metrics
        self.config = config
        self.on_learned = on_learned
        self.serve = serve
        self.latency_ms = LatencyHistogram()  # record sent -> prediction produced
        self.processing_ms = LatencyHistogram()
        self.last_record_at: float | None = None
        self._label_type_logged = False
        self.unreadable_predictions = 0
        self.on_decision: Callable[[Decision], None] | None = None  # a learner republishes
        self.failures = FailureLog(config.name)
        # ordering.serve immediate: events are served by serve_fetched, process only learns.
        self.immediate = serve and config.ordering.serve == "immediate"

    def process(self, incoming: Incoming) -> None:
        started = perf_counter()
        parsed = incoming.parsed
        kind = type(parsed)  # the common kinds first, by type (none has a subclass)
        if kind is not Label and kind is not Event:
            if isinstance(parsed, InvalidRecord):
                self._invalid(incoming, parsed)
                self.processing_ms.add((perf_counter() - started) * 1000.0)
                return
            if isinstance(parsed, Published):
                self.core.on_prediction(parsed)
                self.processing_ms.add((perf_counter() - started) * 1000.0)
                return
            kind = Event if isinstance(parsed, Event) else Label
        # The paths of an event and a label written out here, telemetry included: a Python
        # call saved is about 1% of the consumer's own time per record.
        if kind is Label:
            outcome = self.core.on_label(parsed, incoming.origin)
            # Timed from the record's start: the type tests above are all that is added.
            self.metrics.learn_batch.observe(perf_counter() - started)
        else:
            origin = incoming.origin
            outcome = self.core.on_event(parsed, origin)
            self.metrics.predict_batch.observe(perf_counter() - started)
            if self.serve and not self.immediate:
                payload = outcome.prediction_json()
                if payload is not None:
                    values = parsed.__dict__  # where pydantic keeps the fields
                    key = values["key"]  # event.partition_key, without the property's call
                    # Co-partitioned: the event's own partition number, when the topic has it.
                    if not self.outputs.prediction(
                        (values["id"] if key is None else key).encode(),
                        payload,
                        origin.partition,
                        origin,
                    ):
                        self.core.state.dead_letters[OUTPUT_TOO_LARGE] += 1
                    self._served(incoming.sent_ms, values["ts"])
        if outcome.review or outcome.rejections or outcome.decisions:
            self._after(outcome)
        elif outcome.learned:
            self.on_learned(self.core.state.labels)
        self.processing_ms.add((perf_counter() - started) * 1000.0)

    def serve_fetched(self, items: list[Item]) -> None:
        """``ordering.serve: immediate``: serve fetched events at once, with the model as it
        is, before the merge releases them (:meth:`process` then only learns from them).

        A record that raises here is left to :meth:`process`, which dead-letters it in order.
        """
        serve_at_once, outputs = self.core.serve_at_once, self.outputs
        for item in items:
            incoming = item.payload
            event = incoming.parsed
            if type(event) is not Event:
                continue  # invalid: dead-lettered in order
            try:
                payload = serve_at_once(event)
                if payload is None:
                    continue  # a duplicate: rejected in order
                values = event.__dict__
                key = values["key"]
                origin = incoming.origin
                if not outputs.prediction(
                    (values["id"] if key is None else key).encode(),
                    payload,
                    origin.partition,
                    origin,
                ):
                    self.core.state.dead_letters[OUTPUT_TOO_LARGE] += 1
            except Exception as e:
                if is_infrastructure(e):
                    raise
                continue
            self._served(incoming.sent_ms, values["ts"])

    def _served(self, sent_ms: float | None, event_ts: float) -> None:
        """A prediction published: its latency from the producer's send (wall clock) and from
        the event's own time. ``x if x > 0.0 else 0.0`` is max(0.0, x) without its call (NaN
        and -0.0 give 0.0 either way)."""
        now = time.time()
        metrics = self.metrics
        if sent_ms is not None:
            wall_ms = now * 1000.0 - sent_ms
            wall_ms = wall_ms if wall_ms > 0.0 else 0.0
            self.latency_ms.add(wall_ms)
            metrics.latency_wall.observe(wall_ms / 1000.0)
        since_event = now - event_ts
        metrics.latency_event.observe(since_event if since_event > 0.0 else 0.0)

    def tidy(self) -> None:
        """Once per batch of records: fold the latency histograms' values (see ``add``)."""
        self.latency_ms.tidy()
        self.processing_ms.tidy()

    def failed(self, incoming: Incoming, error: Exception) -> None:
        """``incoming`` raised where nothing expected it (not an infrastructure fault, see
        :func:`is_infrastructure`): dead-lettered, and the pipeline goes on.

        What the core did with the record before it raised stays done: a replay from the same
        checkpoint raises at the same point, so recovery still equals an uninterrupted run.
        """
        message = self.failures.note(incoming, error)
        self.core.state.dead_letters[PROCESSING_ERROR] += 1
        self.outputs.dead_letter(incoming.origin, PROCESSING_ERROR, message)

    def _invalid(self, incoming: Incoming, parsed: InvalidRecord) -> None:
        if incoming.kind == KIND_PREDICTION:
            # riverline's own output, still in its topic: counted, not dead-lettered.
            self.unreadable_predictions += 1
            if self.unreadable_predictions == 1:
                log.error("pipeline %s: %s (at %s)", self.config.name, parsed, incoming.origin[:3])
            return
        self.core.state.dead_letters[parsed.reason] += 1
        if parsed.reason == "label_wrong_type" and not self._label_type_logged:
            self._label_type_logged = True
            log.error(
                "pipeline %s: %s; every such label is dead-lettered (label_wrong_type). "
                "model.spec %r does not fit these labels",
                self.config.name,
                parsed,
                self.config.model.spec,
            )
        if self.serve or incoming.kind != KIND_EVENT:
            self.outputs.dead_letter(incoming.origin, parsed.reason, str(parsed))

    def _after(self, outcome: Outcome) -> None:
        if outcome.review:
            refused = self.outputs.review(outcome.review)
            if refused:
                self.core.state.dead_letters[OUTPUT_TOO_LARGE] += refused
        for rejection in outcome.rejections:
            if rejection.reason == "model_non_finite":
                # Rare, and the model was about to be lost for good: worth a line of its own.
                log.warning("pipeline %s: %s", self.config.name, rejection.message)
            self.outputs.dead_letter(rejection.origin, rejection.reason, rejection.message)
        for decision in outcome.decisions:
            log_decision(decision)
            if self.on_decision is not None:
                self.on_decision(decision)
        if outcome.learned:
            self.on_learned(self.core.state.labels)


def observe_latency(
    metrics: PipelineMetrics,
    latency_ms: LatencyHistogram,
    incoming: Incoming,
    event: Event,
    now: float,
) -> None:
    """A prediction was produced at ``now``: time since the record was sent (wall clock) and
    since the event happened (event time)."""
    if incoming.sent_ms is not None:
        wall_ms = max(0.0, now * 1000.0 - incoming.sent_ms)
        latency_ms.update(wall_ms)
        metrics.latency_wall.observe(wall_ms / 1000.0)
    metrics.latency_event.observe(max(0.0, now - event.ts))


def log_decision(decision: Decision) -> None:
    log.info(
        "%s at label %d: model %.4f vs fallback %.4f (%s)",
        decision.kind,
        decision.label_index,
        decision.model_metric,
        decision.fallback_metric,
        decision.reason,
    )


class PredictionProcessor:
    """A predictor's record path: validate, serve with the current model version, publish.

    No label is read and nothing is learned; every event gets a prediction (or a dead letter).
    """

    def __init__(self, serving: ServingCore, outputs: Outputs, metrics: PipelineMetrics) -> None:
        self.serving = serving
        self.outputs = outputs
        self.metrics = metrics
        # Events and predictions by source are the serving core's counts; these are the rest.
        self.dead_letters: Counter[str] = Counter()
        self.latency_ms = LatencyHistogram()  # record sent -> prediction produced
        self.processing_ms = LatencyHistogram()
        self.last_record_at: float | None = None
        # model version -> wall time it was published; observed at its first prediction
        self.awaiting_first_use: dict[int, float] = {}
        self.version_to_first_use_ms = LatencyHistogram()
        self.failures = FailureLog(serving.pipeline)

    def failed(self, incoming: Incoming, error: Exception) -> None:
        """As :meth:`RecordProcessor.failed`: dead-lettered, counted, and serving goes on."""
        message = self.failures.note(incoming, error)
        self.dead_letters[PROCESSING_ERROR] += 1
        self.outputs.dead_letter(incoming.origin, PROCESSING_ERROR, message)

    def process(self, incoming: Incoming) -> None:
        started = perf_counter()
        parsed = incoming.parsed
        if isinstance(parsed, InvalidRecord):
            self.dead_letters[parsed.reason] += 1
            self.outputs.dead_letter(incoming.origin, parsed.reason, str(parsed))
        elif isinstance(parsed, Event):
            self._on_event(incoming, parsed)
        self.processing_ms.update((perf_counter() - started) * 1000.0)

    def _on_event(self, incoming: Incoming, event: Event) -> None:
        predict_started = perf_counter()
        outcome = self.serving.on_event(event, incoming.origin)
        self.metrics.predict_batch.observe(perf_counter() - predict_started)
        payload = outcome.prediction_json()
        if payload is not None:
            if self.outputs.prediction(
                event.partition_key.encode(), payload, incoming.partition, incoming.origin
            ):
                now = time.time()
                if self.awaiting_first_use:
                    self._first_use(now)
                observe_latency(self.metrics, self.latency_ms, incoming, event, now)
            else:
                self.dead_letters[OUTPUT_TOO_LARGE] += 1
        for rejection in outcome.rejections:
            self.dead_letters[rejection.reason] += 1
            self.outputs.dead_letter(rejection.origin, rejection.reason, rejection.message)

    def _first_use(self, now: float) -> None:
        version = self.serving.model_version
        published_at = self.awaiting_first_use.pop(version, None)
        if published_at is not None:
            self.version_to_first_use_ms.update(max(0.0, now - published_at) * 1000.0)
