"""Outputs bounded by kafka.max_message_bytes, and the per-record guard (issue 18.1)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
import redis
from kafka.errors import KafkaTimeoutError

from consumers.outputs import Outputs
from consumers.processing import RecordProcessor, is_infrastructure
from pipeline.checkpointing.trust import Fenced
from pipeline.config import load_config
from pipeline.core import LearningCore
from pipeline.kafka.records import KIND_EVENT, Incoming, Origin
from pipeline.kafka.transport import TransportError
from pipeline.review import ReviewOutput
from pipeline.schemas import (
    RECORD_OVERHEAD,
    DeadLetter,
    Event,
    Prediction,
    encode,
    encode_dead_letter,
)
from pipeline.state.lease import LeaseLost
from pipeline.telemetry import PipelineMetrics

MAX = 20_000


def letter(key: bytes | None, value: bytes | None, message: str = "m") -> DeadLetter:
    return DeadLetter.of(
        "value_too_long",
        message,
        topic="t.events",
        partition=3,
        offset=41,
        timestamp=None,
        key=key,
        value=value,
        rejected_at=1.0,
        pipeline="p",
    )


@pytest.mark.parametrize("size", [0, 100, MAX // 2, MAX, 5 * MAX])
@pytest.mark.parametrize("key", [None, b"k", b"k" * 2_000])
def test_a_dead_letter_never_exceeds_the_limit_and_says_what_it_cut(
    size: int, key: bytes | None
) -> None:
    value = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    sent = encode_dead_letter(letter(key, value), key, value, MAX)
    assert len(sent) + len(key or b"") + RECORD_OVERHEAD <= MAX
    found = json.loads(sent)
    kept = base64.b64decode(found["value_b64"])
    assert value.startswith(kept)
    assert found["value_truncated"] is (kept != value)
    assert found["value_length"] == len(value)
    assert found["value_sha256"] == hashlib.sha256(value).hexdigest()
    assert (found["topic"], found["partition"], found["offset"]) == ("t.events", 3, 41)
    if not found["value_truncated"]:
        assert sent == encode(letter(key, value))  # what fits is published whole


def test_a_long_message_and_key_are_cut_before_the_value() -> None:
    key, value = b"K" * 30_000, b"v" * 100
    sent = json.loads(encode_dead_letter(letter(key, value, "M" * 50_000), b"digest", value, MAX))
    assert sent["key_truncated"] is True and sent["value_truncated"] is False
    assert base64.b64decode(sent["value_b64"]) == value
    assert sent["message"].startswith("MMM") and sent["message"].endswith("(50000 characters)")


def test_no_value_stays_no_value() -> None:
    sent = json.loads(encode_dead_letter(letter(None, None, "M" * 50_000), None, None, MAX))
    assert sent["value_b64"] is None and sent["value_length"] is None


class Recorder:
    """A producer that keeps what it was given (the broker's acknowledgement is not the point
    here: what is sent is)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, int | None]] = []

    def tracked_sender(self) -> Recorder:
        return self

    def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None) -> None:
        self.sent.append((topic, key, value, partition))

    def unacknowledged(self) -> list[Any]:
        return []

    def flush(self, timeout_s: float) -> None:
        pass

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass


def outputs() -> tuple[Outputs, Recorder]:
    producer = Recorder()
    cfg = load_config(None, {"name": "p"}, environ={})
    return Outputs(lambda: producer, cfg.kafka.topics, "p", 1, 5.0, max_message_bytes=MAX), producer


def origin(value: bytes, key: bytes | None = b"k") -> Origin:
    return Origin("p.events", 0, 9, None, key, value)


def assert_bounded(producer: Recorder) -> None:
    for _, key, value, _ in producer.sent:
        assert len(key or b"") + len(value) + RECORD_OVERHEAD <= MAX


def test_a_prediction_too_large_is_dead_lettered_with_its_event() -> None:
    out, producer = outputs()
    event = b'{"id": "e"}' + b" " * 30_000
    assert out.prediction(b"k", b"small", 0, origin(event)) is True
    assert out.prediction(b"k" * MAX, b"small", 0, origin(event)) is False
    assert out.published == 1
    assert [t for t, *_ in producer.sent] == ["p.predictions", "p.dead-letters"]
    found = json.loads(producer.sent[1][2])
    assert found["reason"] == "output_too_large" and "prediction" in found["message"]
    assert found["value_truncated"] and found["value_length"] == len(event)
    assert_bounded(producer)


def test_a_review_output_too_large_is_dead_lettered_as_itself() -> None:
    out, producer = outputs()
    prediction = Prediction(
        id="e",
        ts=1.0,
        prediction=True,
        source="default",
        model_version=0,
        mode="cold",
        confidence=None,
        pipeline="p",
    )
    refused = out.review([ReviewOutput("k", prediction), ReviewOutput("K" * MAX, prediction)])
    assert refused == 1 and out.published == 1
    found = json.loads(producer.sent[1][2])
    assert (found["reason"], found["topic"]) == ("output_too_large", "p.predictions")
    # A huge key is replaced by its digest as the dead letter's record key.
    assert producer.sent[1][1] == hashlib.sha256(b"K" * MAX).hexdigest().encode()
    assert_bounded(producer)


@pytest.mark.parametrize(
    "error",
    [
        redis.ConnectionError("reset"),
        KafkaTimeoutError(),
        TransportError("broker"),
        LeaseLost("taken"),
        Fenced("newer writer"),
        MemoryError(),
        type("KafkaException", (Exception,), {"__module__": "confluent_kafka.cimpl"})(),
    ],
)
def test_infrastructure_faults_stop_a_role(error: BaseException) -> None:
    assert is_infrastructure(error)


@pytest.mark.parametrize(
    "error", [ValueError("x"), TypeError("y"), KeyError("z"), RecursionError(), AssertionError()]
)
def test_anything_else_is_one_records_fault(error: BaseException) -> None:
    assert not is_infrastructure(error)


def test_a_record_that_raises_is_dead_lettered_and_counted() -> None:
    cfg = load_config(
        None,
        {"name": "p", "fallback": {"callable": "tests.unit.rules_for_tests:list_for_weird"}},
        environ={},
    )
    out, producer = outputs()
    core = LearningCore.from_config(cfg)
    processor = RecordProcessor(core, out, PipelineMetrics(), cfg, lambda _: None)
    raw = b'{"id": "w", "ts": 1, "features": {"weird": 1}}'
    weird = Incoming(KIND_EVENT, origin(raw), Event(id="w", ts=1.0, features={"weird": 1}))
    with pytest.raises(ValueError) as caught:
        processor.process(weird)  # the core fails on the callable's answer
    processor.failed(weird, caught.value)
    assert core.state.dead_letters == {"processing_error": 1}
    found = json.loads(producer.sent[-1][2])
    assert found["reason"] == "processing_error"
    assert found["message"].startswith("ValidationError: ")
    assert base64.b64decode(found["value_b64"]) == raw


class BrokenValidator:
    """A validator with a bug: raises something other than InvalidRecord on one value."""

    def event(self, raw: bytes | None) -> Event:
        if raw == b"boom":
            raise RecursionError("maximum recursion depth exceeded")
        return Event(id="ok", ts=1.0, features={})


def test_a_parser_that_raises_spoils_its_record_only() -> None:
    from pipeline.kafka.records import to_item, to_items
    from pipeline.kafka.transport import Record
    from pipeline.schemas import InvalidRecord

    records = [
        Record("p.events", 0, i, None, raw, None, None) for i, raw in enumerate([b"boom", b"x"])
    ]
    validator: Any = BrokenValidator()
    for items in (
        to_items(records, ("p.events", 0), KIND_EVENT, validator),
        [to_item(r, KIND_EVENT, validator) for r in records],
    ):
        bad, good = (item.payload.parsed for item in items)
        assert isinstance(bad, InvalidRecord) and bad.reason == "processing_error"
        assert str(bad).startswith("RecursionError: ")
        assert isinstance(good, Event)


def test_tail_says_a_dead_letters_value_was_cut() -> None:
    from pipeline.cli.tail import format_record

    value = b'{"id": "big", "features": {"s": "' + b"x" * 50_000 + b'"}}'
    sent = encode_dead_letter(letter(None, value), None, value, MAX)
    line = format_record("dead-letters", 0, 5, sent)
    assert f"of {len(value)} bytes, sha256 {hashlib.sha256(value).hexdigest()})" in line
