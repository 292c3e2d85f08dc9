"""A reviewer without people: answers review requests from the source's true labels.

``simulated:accuracy=0.95,delay=2s,seed=1`` answers right with probability ``accuracy`` (else a
wrong class, or for a regression target a value off by ``noise`` of it), ``delay`` later in
event time: the answer's ``ts`` and ``answered_at`` are the request's event time plus ``delay``,
so a replay gets the same answers at the same places whatever the machine's speed. Each answer
draws from its own generator seeded by ``seed`` and the event id, so it does not depend on the
order requests are read in.

>>> spec = parse_reviewer("simulated:accuracy=0.5,delay=2s,seed=1")
>>> spec.accuracy, spec.delay_seconds, spec.seed
(0.5, 2.0, 1)
>>> answers = SimulatedAnswers(spec, {"a": True, "b": False})
>>> from pipeline.schemas import ReviewRequest
>>> request = ReviewRequest(id="a", pipeline="p", ts=10.0, features={}, task="classification",
...                         mode="label", requested_at=10.0)
>>> label = answers.answer(request)
>>> label.source, label.reviewer, label.ts, label.answered_at
('human', 'simulated', 12.0, 12.0)
>>> label.label == answers.answer(request).label  # the same answer every time
True
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass
from typing import Any

from pipeline.config import RiverlineConfig
from pipeline.schemas import InvalidRecord, Label, ReviewRequest, encode
from producers.schedule import parse_delay

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReviewerSpec:
    accuracy: float = 1.0
    delay_seconds: float = 0.0
    seed: int = 0
    noise: float = 0.1  # regression: a wrong answer is off by this share of the truth
    name: str = "simulated"


def parse_reviewer(text: str) -> ReviewerSpec:
    """``simulated[:key=value,...]`` with accuracy, delay (event time: 2s, 1m), seed, noise.

    >>> parse_reviewer("simulated")
    ReviewerSpec(accuracy=1.0, delay_seconds=0.0, seed=0, noise=0.1, name='simulated')
    >>> parse_reviewer("simulated:accuracy=2")
    Traceback (most recent call last):
    ...
    ValueError: accuracy must be between 0 and 1, not 2.0
    """
    kind, _, rest = text.partition(":")
    if kind != "simulated":
        raise ValueError(f"unknown reviewer {kind!r}: the only one is simulated[:accuracy=..]")
    values: dict[str, Any] = {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq:
            raise ValueError(f"{part!r}: expected key=value")
        try:
            if key == "accuracy" or key == "noise":
                values[key] = float(value)
            elif key == "seed":
                values["seed"] = int(value)
            elif key == "delay":
                delay = parse_delay(value)
                if delay.seconds is None:
                    raise ValueError("delay is a duration in event time, such as 2s")
                values["delay_seconds"] = delay.seconds
            elif key == "name":
                values["name"] = value
            else:
                raise ValueError(f"unknown setting {key!r} (accuracy, delay, seed, noise, name)")
        except ValueError as e:
            if "unknown setting" in str(e) or "duration" in str(e):
                raise
            raise ValueError(f"{key}={value!r}: {e}") from None
    spec = ReviewerSpec(**values)
    if not 0.0 <= spec.accuracy <= 1.0:
        raise ValueError(f"accuracy must be between 0 and 1, not {spec.accuracy}")
    return spec


class SimulatedAnswers:
    """The answers themselves (no I/O): right with probability ``accuracy``."""

    def __init__(self, spec: ReviewerSpec, truth: dict[str, Any]) -> None:
        self.spec = spec
        self.truth = truth
        values = list(truth.values())
        self.regression = bool(values) and all(
            isinstance(v, float) and not isinstance(v, bool) for v in values
        )
        self.classes = [] if self.regression else sorted(set(values), key=repr)

    def answer(self, request: ReviewRequest) -> Label | None:
        if request.id not in self.truth:
            return None  # not from this source: nobody knows
        true = self.truth[request.id]
        rng = random.Random(f"{self.spec.seed}:{request.id}")
        given = true
        if rng.random() >= self.spec.accuracy:
            if self.regression:
                given = float(true) * (1 + self.spec.noise * rng.choice((-1, 1)))
            else:
                wrong = [c for c in {*self.classes, *request.classes} if c != true]
                if wrong:
                    given = rng.choice(sorted(wrong, key=repr))
        delay = self.spec.delay_seconds
        return Label(
            id=request.id,
            ts=request.ts + delay,
            label=given,
            source="human",
            reviewer=self.spec.name,
            answered_at=request.requested_at + delay,
        )


def true_labels(source: str, limit: int | None = None) -> dict[str, Any]:
    """Every record's label, by id (what the simulated reviewer knows)."""
    from producers.sources import SourceOptions, open_source

    return {r.id: r.label for r in open_source(source, SourceOptions(limit=limit))}


class SimulatedReviewer:
    """Reads the review-requests topic and publishes answers to the labels topic, on a thread.

    Real Kafka on both sides: the same path a person's answer takes from the review app.
    """

    def __init__(self, config: RiverlineConfig, bootstrap: str, answers: SimulatedAnswers) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self.answers = answers
        self.answered = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="simulated-reviewer", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> SimulatedReviewer:
        from pipeline.kafka.clients import ensure_topics

        topics = self.config.kafka.topics
        ensure_topics(self.config.kafka, self.bootstrap, [topics.review_requests, topics.labels])
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # reported by the caller, not swallowed
            log.exception("simulated reviewer stopped")
            self.error = e

    def _loop(self) -> None:
        from kafka import TopicPartition

        from pipeline.kafka.clients import make_consumer, make_producer

        topics = self.config.kafka.topics
        consumer = make_consumer(self.config.kafka, self.bootstrap, None, fetch_max_wait_ms=100)
        producer = make_producer(self.config.kafka, self.bootstrap)
        try:
            partitions = consumer.partitions_for_topic(topics.review_requests) or {0}
            consumer.assign([TopicPartition(topics.review_requests, p) for p in partitions])
            while not self.stopping.is_set():
                for records in consumer.poll(timeout_ms=100).values():
                    for record in records:
                        self._answer(producer, record.key, record.value)
                producer.flush()
        finally:
            consumer.close()
            producer.close()

    def _answer(self, producer: Any, key: bytes | None, value: bytes | None) -> None:
        try:
            request = ReviewRequest.model_validate_json(value or b"")
        except ValueError as e:
            log.warning("not a review request (%s): skipped", InvalidRecord("bad", str(e)))
            return
        label = self.answers.answer(request)
        if label is None:
            return
        producer.send(self.config.kafka.topics.labels, key=key, value=encode(label))
        self.answered += 1
