"""Wire formats, validated with pydantic at the edge.

>>> e = parse_event(b'{"id": "7", "ts": 12.5, "features": {"x": 1.0, "city": "Lyon"}}')
>>> e.id, e.ts, e.features, e.partition_key
('7', 12.5, {'x': 1.0, 'city': 'Lyon'}, '7')

>>> try:
...     parse_event(b'{"id": "7", "features": {}}')
... except InvalidRecord as err:
...     print(err.reason, "|", err)
missing_field | ts: Field required
"""

from __future__ import annotations

import base64
import json
import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

# Order matters: bool before int, or true would become 1.
FeatureValue = StrictBool | StrictInt | StrictFloat | StrictStr | None
LabelValue = StrictBool | StrictInt | StrictFloat | StrictStr

MAX_ID_LENGTH = 256


def _to_epoch_seconds(value: Any) -> Any:
    """Accept epoch seconds or an ISO-8601 string (naive means UTC)."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("must be epoch seconds or an ISO-8601 datetime") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    if isinstance(value, bool):
        raise ValueError("must be epoch seconds or an ISO-8601 datetime")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


EventTime = Annotated[float, BeforeValidator(_to_epoch_seconds), Field(allow_inf_nan=False)]
RecordId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Event(_Wire):
    """Something to predict: ``features`` feed the model, ``attributes`` do not."""

    id: RecordId
    ts: EventTime
    features: dict[str, FeatureValue]
    key: str | None = None
    attributes: dict[str, FeatureValue] = Field(default_factory=dict)

    @property
    def partition_key(self) -> str:
        return self.key if self.key is not None else self.id


class Label(_Wire):
    """The truth about an event, known at ``ts``."""

    id: RecordId
    ts: EventTime
    label: LabelValue
    source: Literal["ground_truth", "human"] = "ground_truth"
    # A person's answer says who gave it and when (``ts`` stays the label's event-time order).
    reviewer: str | None = Field(default=None, max_length=200)
    answered_at: float | None = None


PredictionSource = Literal["model", "heuristic", "callable", "human", "default", "none"]


class Prediction(_Wire):
    """What was served for an event, and why."""

    id: str
    ts: float
    prediction: LabelValue | None
    proba: dict[str, float] | None = None
    source: PredictionSource
    model_version: int
    confidence: float | None
    mode: str
    explanation: list[dict[str, Any]] | None = None
    pipeline: str | None = None  # the pipeline that served it
    # Humans in the loop (defer mode): the person did not answer in time, the fallback's answer
    # was served at the deadline. A person's answer is served with ``source: human``.
    deadline_passed: bool | None = None
    reviewer: str | None = None


class ModelOpinion(_Wire):
    """What the model said about an event when it was sent for review."""

    prediction: LabelValue | None
    proba: dict[str, float] | None = None
    confidence: float | None = None
    model_version: int


class RulesOpinion(_Wire):
    """What the fallback chain (rules, callable, default) said about the event."""

    prediction: LabelValue | None
    source: PredictionSource
    confidence: float | None = None


class ReviewRequest(_Wire):
    """An event sent to people, on the review-requests topic, keyed like its event.

    The answer comes back as a :class:`Label` with ``source="human"``, ``reviewer`` and
    ``answered_at`` set, on the labels topic.
    """

    id: str
    pipeline: str
    ts: float
    features: dict[str, FeatureValue]
    attributes: dict[str, FeatureValue] = Field(default_factory=dict)
    key: str | None = None
    task: Literal["classification", "regression"]
    classes: list[LabelValue] = Field(default_factory=list)
    model: ModelOpinion | None = None
    rules: RulesOpinion | None = None
    mode: Literal["label", "defer"]
    requested_at: float
    deadline: float | None = None


class DeadLetter(_Wire):
    """A record that could not be used, with everything needed to replay it."""

    reason: str
    message: str
    topic: str
    partition: int
    offset: int
    timestamp: int | None
    key_b64: str | None
    value_b64: str | None
    rejected_at: float
    pipeline: str | None = None  # the pipeline that rejected it

    @classmethod
    def of(
        cls,
        reason: str,
        message: str,
        *,
        topic: str,
        partition: int,
        offset: int,
        timestamp: int | None,
        key: bytes | None,
        value: bytes | None,
        rejected_at: float,
        pipeline: str | None = None,
    ) -> DeadLetter:
        def b64(raw: bytes | None) -> str | None:
            return None if raw is None else base64.b64encode(raw).decode("ascii")

        return cls(
            reason=reason,
            message=message,
            topic=topic,
            partition=partition,
            offset=offset,
            timestamp=timestamp,
            key_b64=b64(key),
            value_b64=b64(value),
            rejected_at=rejected_at,
            pipeline=pipeline,
        )


class InvalidRecord(ValueError):
    """A record that fails validation; ``reason`` is a stable code for counting."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _reason(error: ValidationError) -> InvalidRecord:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    kind = first["type"]
    if where.startswith(("features.", "attributes.")) and isinstance(
        first.get("input"), dict | list
    ):
        reason = "nested_feature"
    elif kind == "missing":
        reason = "missing_field"
    elif kind == "json_invalid":
        reason = "not_json"
    elif kind in ("model_type", "model_attributes_type", "dict_type") and not where:
        reason = "not_an_object"
    elif kind == "extra_forbidden":
        reason = "unknown_field"
    elif kind == "finite_number" or "inf_nan" in kind:
        reason = "not_finite"
    else:
        reason = "wrong_type"
    message = first["msg"].removeprefix("Value error, ")
    if reason == "nested_feature":
        where = ".".join(str(p) for p in first["loc"][:2])
        message = "must be a number, a string, a bool or null, not an object or a list"
    return InvalidRecord(reason, f"{where}: {message}" if where else message)


def _decode(model: type[_Wire], raw: bytes | None) -> Any:
    if not raw:  # a tombstone (None) or a zero-length value
        raise InvalidRecord("empty", "the record has no value")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidRecord("not_utf8", f"value is not UTF-8: {e}") from None
    try:
        return model.model_validate_json(text)
    except ValidationError as e:
        raise _reason(e) from None


def parse_event(raw: bytes | None) -> Event:
    """Bytes to a checked event, or InvalidRecord with its reason.

    >>> parse_event(b'{"id": "1", "ts": 3, "features": {"x": 1}}') == Event(
    ...     id="1", ts=3.0, features={"x": 1})
    True
    """
    event: Event = _decode(Event, raw)
    for name, value in event.features.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidRecord("not_finite", f"features.{name}: must be a finite number")
    return event


def parse_label(raw: bytes | None) -> Label:
    """Bytes to a checked label, or InvalidRecord with its reason.

    >>> parse_label(b'{"id": "1", "ts": 3, "label": true}') == Label(id="1", ts=3.0, label=True)
    True
    """
    label: Label = _decode(Label, raw)
    if isinstance(label.label, float) and not math.isfinite(label.label):
        raise InvalidRecord("not_finite", "label: must be a finite number")
    return label


def encode(record: _Wire) -> bytes:
    return record.model_dump_json().encode("utf-8")


def encode_fields(fields: dict[str, Any]) -> bytes:
    """A record given as its fields, in field order and of plain JSON types, to the same bytes
    as ``encode`` of the model (no model built).

    >>> fields = {"id": "1", "ts": 2.0, "prediction": True, "proba": None, "source": "default",
    ...           "model_version": 0, "confidence": None, "mode": "cold", "explanation": None,
    ...           "pipeline": "p", "deadline_passed": None, "reviewer": None}
    >>> encode_fields(fields) == encode(Prediction(**fields))
    True
    """
    return orjson.dumps(fields)


def proba_key(label: Any) -> str:
    """JSON object keys are strings: keep str labels, JSON-encode the rest (True -> 'true')."""
    return label if isinstance(label, str) else json.dumps(label)
