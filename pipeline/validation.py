"""Checks beyond the schema, each with a stable reason code for the dead-letter topic.

Structure (UTF-8, JSON, fields and types) is checked by :mod:`pipeline.schemas`; this module
checks the limits a deployment sets: sizes, counts, lengths, times, the label set.

>>> from pipeline.config import ValidationConfig
>>> limits = ValidationConfig(max_features=2, labels=(True, False))
>>> check_event(Event(id="a", ts=0.0, features={"x": 1, "y": 2, "z": 3}), limits, now=0.0)
Traceback (most recent call last):
...
pipeline.schemas.InvalidRecord: 3 features where at most 2 are allowed
>>> check_label(Label(id="a", ts=0.0, label="no"), limits, now=0.0, regression=False)
Traceback (most recent call last):
...
pipeline.schemas.InvalidRecord: label 'no' (str) is not one of the configured labels (True, False)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.config import ValidationConfig
from pipeline.schemas import (
    Event,
    InvalidRecord,
    Label,
    check_magnitude,
    parse_event,
    parse_label,
)

REASONS = {
    "empty": "the record has no value",
    "record_too_large": "the record is larger than validation.max_record_bytes",
    "not_utf8": "the value is not UTF-8",
    "not_json": "the value is not JSON",
    "not_an_object": "the JSON is not an object",
    "missing_field": "a required field is missing",
    "unknown_field": "a field that the format does not have",
    "wrong_type": "a field has the wrong type",
    "nested_feature": "a feature or attribute value is an object or a list",
    "not_finite": "a number is NaN or infinite",
    "value_out_of_range": "a number feature (or a regressor's label) is beyond "
    "validation.max_abs_value",
    "value_too_long": "a string feature is longer than validation.max_string_length",
    "too_many_features": "more features than validation.max_features",
    "ts_in_future": "the event time is too far ahead of the wall clock",
    "ts_before_start": "the event time is before validation.min_ts",
    "duplicate_event": "an event id seen before",
    "label_wrong_type": "the label's type does not fit the task",
    "label_not_allowed": "the label is not in validation.labels",
    "label_orphaned": "a label whose event expired or never came, within the join TTL",
    "event_evicted": "the join buffer was full (join.max_pending or max_pending_bytes): the "
    "oldest pending event was dropped; its value is the event re-serialised",
    "model_error": "the model raised on this record",
    "processing_error": "anything else raised on this record (the message names the exception)",
    "output_too_large": "the prediction or review request is larger than kafka.max_message_bytes",
    "model_non_finite": "learning from this event turned the model's state NaN or infinite: "
    "the model was rolled back to before it",
}


def check_size(raw: bytes | None, limits: ValidationConfig) -> None:
    if raw is not None and len(raw) > limits.max_record_bytes:
        raise InvalidRecord(
            "record_too_large",
            f"{len(raw)} bytes where at most {limits.max_record_bytes} are allowed",
        )


def _check_ts(ts: float, limits: ValidationConfig, now: float) -> None:
    if limits.max_future_seconds is not None and ts > now + limits.max_future_seconds:
        raise InvalidRecord(
            "ts_in_future", f"ts {ts} is more than {limits.max_future_seconds}s ahead of now"
        )
    if limits.min_ts is not None and ts < limits.min_ts:
        raise InvalidRecord(
            "ts_before_start", f"ts {ts} is before validation.min_ts {limits.min_ts}"
        )


def check_event(event: Event, limits: ValidationConfig, now: float) -> None:
    """Raise InvalidRecord if the event breaks a configured limit."""
    if len(event.features) > limits.max_features:
        raise InvalidRecord(
            "too_many_features",
            f"{len(event.features)} features where at most {limits.max_features} are allowed",
        )
    bound = limits.max_abs_value
    for name, value in event.features.items():
        if isinstance(value, str) and len(value) > limits.max_string_length:
            raise InvalidRecord(
                "value_too_long",
                f"features.{name}: {len(value)} characters, at most {limits.max_string_length}",
            )
        if bound is not None:
            check_magnitude(f"features.{name}", value, bound)
    _check_ts(event.ts, limits, now)


def check_label(label: Label, limits: ValidationConfig, now: float, regression: bool) -> None:
    """Raise InvalidRecord if the label cannot be learned from.

    A regressor needs numbers; a classifier needs classes, so a fractional number is refused:

    >>> limits = ValidationConfig()
    >>> check_label(Label(id="a", ts=0.0, label=0.37), limits, now=0.0, regression=False)
    Traceback (most recent call last):
    ...
    pipeline.schemas.InvalidRecord: label 0.37 is not a class, and the model is a classifier
    >>> check_label(Label(id="a", ts=0.0, label=1.0), limits, now=0.0, regression=False)
    """
    value = label.label
    if regression and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise InvalidRecord(
            "label_wrong_type", f"label {value!r} is not a number, and the model is a regressor"
        )
    if regression and limits.max_abs_value is not None:
        check_magnitude("label", value, limits.max_abs_value)
    if not regression and isinstance(value, float) and not value.is_integer():
        # A classifier would make every distinct number a class of its own.
        raise InvalidRecord(
            "label_wrong_type", f"label {value!r} is not a class, and the model is a classifier"
        )
    if limits.labels is not None and not label_allowed(value, limits.labels):
        raise InvalidRecord(
            "label_not_allowed",
            f"label {value!r} ({type(value).__name__}) is not one of the configured labels "
            f"{limits.labels}",
        )
    _check_ts(label.ts, limits, now)


def label_allowed(value: object, labels: tuple[object, ...]) -> bool:
    """Whether ``value`` is one of ``labels``, type included.

    ``in`` compares with ``==``, where ``1 == True == 1.0``: a set of ``[true, false]`` would let
    ``1`` and ``0.0`` through. A model keys them as one class (they hash alike) and serves
    whichever it saw first, so a stream of booleans could get ``1`` back, or a producer that
    sends ``1`` by mistake go unnoticed. bool, int, float and str match only themselves; a set
    that means ``1`` and ``1.0`` alike lists both.

    >>> label_allowed(1, (True, False)), label_allowed(True, (True, False))
    (False, True)
    >>> label_allowed(1.0, (0, 1)), label_allowed(1.0, (0, 1, 0.0, 1.0))
    (False, True)
    """
    kind = type(value)
    return any(type(allowed) is kind and allowed == value for allowed in labels)


@dataclass(frozen=True)
class Validator:
    """Raw bytes to a checked event or label, or InvalidRecord with its reason code.

    >>> v = Validator(ValidationConfig(max_record_bytes=64), regression=False)
    >>> v.event(b'{"id": "1", "ts": 0, "features": {"x": 1}}').id
    '1'
    >>> v.event(b'{"id": "1", "ts": 0, "features": {"x": "' + b"a" * 100 + b'"}}')
    Traceback (most recent call last):
    ...
    pipeline.schemas.InvalidRecord: 143 bytes where at most 64 are allowed
    """

    limits: ValidationConfig
    regression: bool
    clock: Callable[[], float] = field(default=time.time)

    def event(self, raw: bytes | None) -> Event:
        limits = self.limits
        if raw is not None and len(raw) > limits.max_record_bytes:
            check_size(raw, limits)
        event = parse_event(raw, limits.max_abs_value)
        size = len(raw)  # type: ignore[arg-type]  # parse_event refuses None
        values = event.__dict__  # where pydantic keeps the fields
        if size <= limits.max_string_length and len(values["features"]) <= limits.max_features:
            # No string in a record this short is longer than the limit (a JSON string takes a
            # byte or more per character): check_event's own loop over the features would pass.
            # _check_ts's tests written out (a call saved per record); it raises, with its reason.
            ts, now = values["ts"], self.clock()
            future, min_ts = limits.max_future_seconds, limits.min_ts
            if (future is not None and ts > now + future) or (min_ts is not None and ts < min_ts):
                _check_ts(ts, limits, now)
        else:
            check_event(event, limits, self.clock())
        return event

    def label(self, raw: bytes | None) -> Label:
        limits = self.limits
        if raw is not None and len(raw) > limits.max_record_bytes:
            check_size(raw, limits)
        label = parse_label(raw)
        values = label.__dict__
        kind = type(values["label"])
        # check_label's type tests, for the usual types: a regressor's number (within
        # max_abs_value), a classifier's bool, int or str (never refused), with no label set
        # configured.
        bound = limits.max_abs_value
        if limits.labels is None and (
            (
                (kind is float or kind is int)
                and (bound is None or -bound <= values["label"] <= bound)
            )
            if self.regression
            else (kind is bool or kind is int or kind is str)
        ):
            ts, now = values["ts"], self.clock()
            future, min_ts = limits.max_future_seconds, limits.min_ts
            if (future is not None and ts > now + future) or (min_ts is not None and ts < min_ts):
                _check_ts(ts, limits, now)
        else:
            check_label(label, limits, self.clock(), self.regression)
        return label
