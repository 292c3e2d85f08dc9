"""Kafka records <-> what the merge and the core take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from pipeline.ordering import EVENT_RANK, LABEL_RANK, PREDICTION_RANK, Item
from pipeline.schemas import InvalidRecord
from pipeline.served import parse_published
from pipeline.validation import Validator

SEQ_HEADER = "seq"
# Wall-clock send time in ms: replays carry event time as the record timestamp, so latency
# needs its own clock. Without the header, the record timestamp is taken as the send time.
SENT_HEADER = "sent_ms"
KIND_EVENT = "event"
KIND_LABEL = "label"
KIND_PREDICTION = "prediction"  # a learner reads what the predictors published
RANKS = {KIND_LABEL: LABEL_RANK, KIND_EVENT: EVENT_RANK, KIND_PREDICTION: PREDICTION_RANK}


class Origin(NamedTuple):
    """Where a record came from, with its original bytes: enough to dead-letter it later."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Incoming:
    """A consumed record: its parsed payload, or why it could not be parsed."""

    kind: str
    topic: str
    partition: int
    offset: int
    timestamp: int | None
    key: bytes | None
    value: bytes | None
    parsed: Any  # Event, Label or InvalidRecord
    sent_ms: float | None = None

    @property
    def origin(self) -> Origin:
        return Origin(self.topic, self.partition, self.offset, self.timestamp, self.key, self.value)


def header(record: Any, name: str) -> bytes | None:
    for key, value in record.headers or ():
        if key == name:
            return bytes(value) if value is not None else None
    return None


def int_header(record: Any, name: str) -> int | None:
    raw = header(record, name)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def seq_and_sent(record: Any) -> tuple[int | None, int | None]:
    """``int_header`` of the sequence and send-time headers, in one pass over the headers.

    >>> from types import SimpleNamespace
    >>> seq_and_sent(SimpleNamespace(headers=[("sent_ms", b"17"), ("seq", b"3"), ("seq", b"4")]))
    (3, 17)
    """
    seq: int | None = None
    sent: int | None = None
    found_seq = found_sent = False  # the first header of a name counts, as in ``header``
    for key, value in record.headers or ():
        if key == SEQ_HEADER:
            if not found_seq:
                found_seq = True
                seq = _as_int(value)
        elif key == SENT_HEADER and not found_sent:
            found_sent = True
            sent = _as_int(value)
        if found_seq and found_sent:
            break
    return seq, sent


def _as_int(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(bytes(value))
    except ValueError:
        return None


def to_item(record: Any, kind: str, validator: Validator) -> Item:
    """Parse and check a consumer record into a merge item (an invalid one sorts first)."""
    parsed: Any
    try:
        if kind == KIND_EVENT:
            parsed = validator.event(record.value)
        elif kind == KIND_LABEL:
            parsed = validator.label(record.value)
        else:
            parsed = parse_published(record.value)
        ts = parsed.ts
    except InvalidRecord as e:
        parsed = e
        # First in line: a bad record's time (if any) must not hold back the valid records
        # behind it in its partition; it only goes to the dead-letter topic.
        ts = float("-inf")
    seq, sent_ms = seq_and_sent(record)
    incoming = Incoming(
        kind,
        record.topic,
        record.partition,
        record.offset,
        record.timestamp,
        record.key,
        record.value,
        parsed,
        sent_ms or record.timestamp,
    )
    key = (ts, RANKS[kind], seq if seq is not None else -1)
    return Item(key, (record.topic, record.partition), record.offset, incoming)
