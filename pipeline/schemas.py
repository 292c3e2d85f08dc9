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
import hashlib
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
    # Why (explain.enabled): the served prediction's explanation, or one made for the review.
    explanation: list[dict[str, Any]] | None = None


class Neighbour(_Wire):
    """A recently labelled event like the one sent for review (pipeline/neighbours.py)."""

    id: str
    label: LabelValue
    distance: float  # 0: the same features; 1: nothing in common
    differs: dict[str, FeatureValue] = Field(default_factory=dict)  # its values, largest gap first


class RulesOpinion(_Wire):
    """What the fallback chain (rules, callable, default) said about the event."""

    prediction: LabelValue | None
    source: PredictionSource
    confidence: float | None = None
    rule: str | None = None  # the rule that fired, as the config says it


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
    neighbours: list[Neighbour] = Field(default_factory=list)
    mode: Literal["label", "defer"]
    requested_at: float
    deadline: float | None = None


# What a record costs on the wire beyond its key and value: the record batch header (61 bytes),
# the record's own varints and attributes, and headers. Outputs stay this far below
# ``kafka.max_message_bytes``, so that neither client nor broker refuses them.
RECORD_OVERHEAD = 512
# A dead letter's message, and its key when the value had to be cut, are kept to this many
# characters: what is cut is what the origin topic/partition/offset still holds.
DEAD_LETTER_TEXT = 2_048


class DeadLetter(_Wire):
    """A record that could not be used, with everything needed to replay it.

    ``value_length`` and ``value_sha256`` describe the original value. When the whole letter
    would not fit ``kafka.max_message_bytes`` (:func:`encode_dead_letter`), ``value_b64`` keeps
    the value's first bytes only and ``value_truncated`` says so; the record itself is still at
    ``topic``/``partition``/``offset`` (until the topic's retention drops it).
    """

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
    value_length: int | None = None
    value_sha256: str | None = None
    value_truncated: bool = False
    key_truncated: bool = False

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
        return cls(
            reason=reason,
            message=message,
            topic=topic,
            partition=partition,
            offset=offset,
            timestamp=timestamp,
            key_b64=_b64(key),
            value_b64=_b64(value),
            rejected_at=rejected_at,
            pipeline=pipeline,
            value_length=None if value is None else len(value),
            value_sha256=None if value is None else hashlib.sha256(value).hexdigest(),
        )


def _b64(raw: bytes | None) -> str | None:
    return None if raw is None else base64.b64encode(raw).decode("ascii")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def encode_dead_letter(
    letter: DeadLetter, key: bytes | None, value: bytes | None, max_bytes: int
) -> bytes:
    """``letter`` as published: whole when it fits ``max_bytes`` with its record key ``key``,
    else with its message and key cut and as much of ``value`` as fits (``value_truncated``).

    ``key`` and ``value`` are the original bytes ``letter`` was made of (the base64 in it is
    not decoded again). ``max_bytes`` is ``kafka.max_message_bytes``: the result plus ``key``
    and :data:`RECORD_OVERHEAD` never exceeds it.

    >>> value = b"x" * 3000
    >>> letter = DeadLetter.of("r", "m", topic="t", partition=0, offset=7, timestamp=None,
    ...                        key=None, value=value, rejected_at=0.0)
    >>> encode_dead_letter(letter, None, value, 1_000_000) == encode(letter)
    True
    >>> small = json.loads(encode_dead_letter(letter, None, value, 2_000))
    >>> small["value_truncated"], small["value_length"], small["offset"]
    (True, 3000, 7)
    >>> len(encode_dead_letter(letter, None, value, 2_000)) <= 2_000 - RECORD_OVERHEAD
    True
    """
    data = encode(letter)
    budget = max_bytes - RECORD_OVERHEAD - (len(key) if key else 0)
    if len(data) <= budget:
        return data
    key_b64 = letter.key_b64
    key_truncated = letter.key_truncated
    if key is not None and len(key_b64 or "") > DEAD_LETTER_TEXT:
        key_b64, key_truncated = _b64(key[: DEAD_LETTER_TEXT // 4 * 3]), True
    cut = letter.model_copy(
        update={
            "message": _cut(letter.message, DEAD_LETTER_TEXT),
            "key_b64": key_b64,
            "key_truncated": key_truncated,
            "value_b64": "",
            "value_truncated": True,
        }
    )
    # The value's base64 goes between the empty string's quotes: 4 characters per 3 bytes.
    room = budget - len(encode(cut))
    kept = max(0, room // 4 * 3)
    if value is None or kept >= len(value):
        # Cutting the message and key was enough.
        return encode(cut.model_copy(update={"value_b64": _b64(value), "value_truncated": False}))
    return encode(cut.model_copy(update={"value_b64": _b64(value[:kept])}))


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


def _parse_event_validated(raw: bytes | None, max_abs: float | None = None) -> Event:
    """The reference path: pydantic checks everything (the fast path falls back to it)."""
    event: Event = _decode(Event, raw)
    for name, value in event.features.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidRecord("not_finite", f"features.{name}: must be a finite number")
        if max_abs is not None:
            check_magnitude(f"features.{name}", value, max_abs)
    return event


def check_magnitude(where: str, value: Any, max_abs: float) -> None:
    """Refuse a number (not a bool) larger in magnitude than ``max_abs``.

    Finite but huge values (1e308) pass every type check, and one of them turns a linear
    model's state into inf and NaN for good.

    >>> check_magnitude("x", 2e13, 1e12)
    Traceback (most recent call last):
    ...
    pipeline.schemas.InvalidRecord: x: 20000000000000.0 is beyond validation.max_abs_value (1e+12)
    """
    kind = type(value)
    if (kind is float or kind is int) and not -max_abs <= value <= max_abs:
        raise InvalidRecord(
            "value_out_of_range",
            f"{where}: {_short(value)} is beyond validation.max_abs_value ({max_abs:g})",
        )


def _short(value: float) -> str:
    """A number for a message; a huge int by its size (repr refuses ints past 4,300 digits)."""
    if type(value) is int and value.bit_length() > 128:
        return f"an int of {value.bit_length()} bits"
    return repr(value)


def _parse_label_validated(raw: bytes | None) -> Label:
    """The reference path: pydantic checks everything (the fast path falls back to it)."""
    label: Label = _decode(Label, raw)
    if isinstance(label.label, float) and not math.isfinite(label.label):
        raise InvalidRecord("not_finite", "label: must be a finite number")
    return label


# The fast path. Most records on the hot path have the plain shape: orjson decodes them and, when
# every field already holds exactly what pydantic would produce, the model is built without
# validation. Anything else (an error, an unusual but valid value) goes to pydantic, so every
# result and every InvalidRecord stays what pydantic makes of it; tests/unit/test_fast_parse.py
# checks the two agree.
#
# orjson turns an integer literal outside [-2**63, 2**64) into a float where pydantic keeps the
# int: a float that large may have been written as an int, so it is left to pydantic. orjson
# refuses a literal that overflows a float, so every float it returns is finite.
_FLOAT_BOUND = 9223372036854775808.0  # 2**63
# int -> float as pydantic converts it, exactly, below 2**53; beyond, pydantic decides.
_INT_TO_FLOAT_BOUND = 2**53
_PLAIN_TYPES = frozenset((str, int, float, bool, type(None)))  # FeatureValue, as pydantic keeps it
_EVENT_FIELDS = frozenset(("id", "ts", "features", "key", "attributes"))
_LABEL_FIELDS = frozenset(("id", "ts", "label", "source", "reviewer", "answered_at"))
_LABEL_SOURCES = frozenset(("ground_truth", "human"))
_new = object.__new__
_set = object.__setattr__
# The slots pydantic's BaseModel keeps beside ``__dict__``, set as ``model_construct`` sets them.
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def _plain_values(
    values: Any, float_bound: float = _FLOAT_BOUND, int_bound: float = math.inf
) -> bool:
    """A dict of feature values pydantic keeps as they are (its strict bool, int, float, str),
    floats below ``float_bound`` (at most 2**63) and ints below ``int_bound`` in magnitude.

    A value at or past a bound goes to the reference path, which decides (validation's
    ``max_abs_value`` is checked there, exactly); the bounds cost the loop nothing."""
    if type(values) is not dict:
        return False
    for value in values.values():
        kind = type(value)
        if kind is float:
            if not -float_bound < value < float_bound:
                return False
        elif kind is int:
            if not -int_bound < value < int_bound:
                return False
        elif kind not in _PLAIN_TYPES:
            return False
    return True


def _plain_value(value: Any) -> bool:
    """A label value pydantic keeps as it is."""
    kind = type(value)
    if kind is float:
        return -_FLOAT_BOUND < value < _FLOAT_BOUND
    return kind is str or kind is int or kind is bool


def _plain_float(value: Any) -> float | None:
    """A number as pydantic's (lax) float makes it, or None to leave it to pydantic."""
    kind = type(value)
    if kind is float:
        return value if -_FLOAT_BOUND < value < _FLOAT_BOUND else None
    if kind is int and -_INT_TO_FLOAT_BOUND <= value <= _INT_TO_FLOAT_BOUND:
        return float(value)
    return None


def _plain_ts(value: Any) -> float | None:
    if type(value) is str:
        try:
            value = _to_epoch_seconds(value)
        except Exception:  # pydantic reports it (or raises it) on the reference path
            return None
    return _plain_float(value)


def _built(model: type[_Wire], values: dict[str, Any], fields_set: set[str]) -> Any:
    """What ``model.model_construct`` does for these models, without its per-field alias scan."""
    record = _new(model)
    _set(record, "__dict__", values)
    _set_fields_set(record, fields_set)
    _set_extra(record, None)
    _set_private(record, None)
    return record


def rebuilt(model: type[Event] | type[Label], values: dict[str, Any], fields_set: set[str]) -> Any:
    """An event or label again from what one already checked holds (its ``__dict__`` and
    ``model_fields_set``, say sent from another process): not checked again, as
    ``model_construct`` would do it.

    >>> event = parse_event(b'{"id": "1", "ts": 3, "features": {"x": 1}}')
    >>> again = rebuilt(Event, dict(event.__dict__), set(event.model_fields_set))
    >>> again == event, again.model_fields_set == event.model_fields_set
    (True, True)
    """
    return _built(model, values, fields_set)


# The two below decode with orjson (a value it refuses goes to pydantic) and inline the id's
# check and a float time's: a call costs about as much as the check it makes.


def _fast_event(
    raw: bytes | None, float_bound: float = _FLOAT_BOUND, int_bound: float = math.inf
) -> Event | None:
    """The event, when the payload has the plain shape and its features' numbers are within
    the bounds (see _plain_values); None to take the pydantic path."""
    if not raw:
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or not _EVENT_FIELDS.issuperset(data):
        return None
    record_id = data.get("id")
    if type(record_id) is not str or not 0 < len(record_id) <= MAX_ID_LENGTH:
        return None
    features = data.get("features")
    if not _plain_values(features, float_bound, int_bound):
        return None
    ts = data.get("ts")
    if type(ts) is float:
        if not -_FLOAT_BOUND < ts < _FLOAT_BOUND:
            return None
    else:
        ts = _plain_ts(ts)
        if ts is None:
            return None
    key = data.get("key")
    if key is not None and type(key) is not str:
        return None
    if "attributes" in data:
        attributes = data["attributes"]
        if not _plain_values(attributes):
            return None
    else:
        attributes = {}
    values = {"id": record_id, "ts": ts, "features": features, "key": key, "attributes": attributes}
    return _built(Event, values, set(data))  # type: ignore[no-any-return]


def _fast_label(raw: bytes | None) -> Label | None:
    """The label, when the payload has the plain shape; None to take the pydantic path."""
    if not raw:
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or not _LABEL_FIELDS.issuperset(data):
        return None
    record_id = data.get("id")
    if type(record_id) is not str or not 0 < len(record_id) <= MAX_ID_LENGTH:
        return None
    value = data.get("label")
    if not _plain_value(value):
        return None
    ts = data.get("ts")
    if type(ts) is float:
        if not -_FLOAT_BOUND < ts < _FLOAT_BOUND:
            return None
    else:
        ts = _plain_ts(ts)
        if ts is None:
            return None
    source = data.get("source", "ground_truth")
    if type(source) is not str or source not in _LABEL_SOURCES:
        return None
    reviewer = data.get("reviewer")
    if reviewer is not None and (type(reviewer) is not str or len(reviewer) > 200):
        return None
    answered_at = data.get("answered_at")
    if answered_at is not None:
        answered_at = _plain_float(answered_at)
        if answered_at is None:
            return None
    values = {
        "id": record_id,
        "ts": ts,
        "label": value,
        "source": source,
        "reviewer": reviewer,
        "answered_at": answered_at,
    }
    return _built(Label, values, set(data))  # type: ignore[no-any-return]


def _check_fast_path_assumptions() -> None:
    """``_built`` copies ``model_construct`` for models without aliases, post-init or extras."""
    for model, names in ((Event, _EVENT_FIELDS), (Label, _LABEL_FIELDS)):
        fields = model.model_fields
        assert set(fields) == names, model
        assert model.model_config.get("extra") == "forbid", model
        assert model.__pydantic_post_init__ is None and not model.__pydantic_root_model__
        assert all(f.alias is None and f.validation_alias is None for f in fields.values())
    assert Label.model_fields["reviewer"].metadata[0].max_length == 200


_check_fast_path_assumptions()


def parse_event(raw: bytes | None, max_abs: float | None = None) -> Event:
    """Bytes to a checked event, or InvalidRecord with its reason; with ``max_abs``, a number
    feature larger in magnitude is refused (``value_out_of_range``).

    >>> parse_event(b'{"id": "1", "ts": 3, "features": {"x": 1}}') == Event(
    ...     id="1", ts=3.0, features={"x": 1})
    True
    >>> parse_event(b'{"id": "1", "ts": 3, "features": {"x": -1e308}}', max_abs=1e12)
    Traceback (most recent call last):
    ...
    pipeline.schemas.InvalidRecord: features.x: -1e+308 is beyond validation.max_abs_value (1e+12)
    """
    if max_abs is None:
        event = _fast_event(raw)
    else:
        event = _fast_event(raw, min(max_abs, _FLOAT_BOUND), max_abs)
    return event if event is not None else _parse_event_validated(raw, max_abs)


def parse_label(raw: bytes | None) -> Label:
    """Bytes to a checked label, or InvalidRecord with its reason.

    >>> parse_label(b'{"id": "1", "ts": 3, "label": true}') == Label(id="1", ts=3.0, label=True)
    True
    """
    label = _fast_label(raw)
    return label if label is not None else _parse_label_validated(raw)


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
