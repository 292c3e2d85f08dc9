"""Every reason code in the docs' dead-letter table is produced, from raw bytes or the core."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import ValidationConfig, load_config
from pipeline.core import LearningCore
from pipeline.schemas import Event, InvalidRecord, Label
from pipeline.validation import REASONS, Validator

# Generated from pipeline.validation.REASONS; a test fails when it is stale.
CODES_PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "dead-letters.md"
NOW = 1_700_000_000.0


def documented_codes() -> list[str]:
    return re.findall(r"^\| `([a-z0-9_]+)` \|", CODES_PAGE.read_text(), flags=re.MULTILINE)


def event(**fields: Any) -> bytes:
    return json.dumps({"id": "e", "ts": NOW, "features": {"x": 1.0}, **fields}).encode()


LIMITS = ValidationConfig(
    max_record_bytes=300, max_features=3, max_string_length=10, min_ts=NOW - 100, labels=(0, 1)
)
# reason -> (kind, raw value) that the validator refuses with that reason.
RAW: dict[str, tuple[str, bytes | None]] = {
    "empty": ("event", b""),
    "record_too_large": ("event", event(features={"x": "y" * 400})),
    "not_utf8": ("event", b"\xff\xfe"),
    "not_json": ("event", b"{not json"),
    "not_an_object": ("event", b"[1, 2]"),
    "missing_field": ("event", b'{"id": "e", "features": {}}'),
    "unknown_field": ("event", event(extra=1)),
    "wrong_type": ("event", event(ts="noon")),
    "nested_feature": ("event", event(features={"x": [1]})),
    "not_finite": ("event", b'{"id": "e", "ts": 1700000000, "features": {"x": NaN}}'),
    "value_too_long": ("event", event(features={"x": "y" * 11})),
    "too_many_features": ("event", event(features={"a": 1, "b": 2, "c": 3, "d": 4})),
    "ts_in_future": ("event", event(ts=NOW + 8 * 86_400)),
    "ts_before_start": ("event", event(ts=NOW - 1000)),
    "label_not_allowed": ("label", b'{"id": "e", "ts": 1700000000, "label": 7}'),
    "value_out_of_range": ("event", event(features={"x": 1e308})),
}


def test_the_docs_table_lists_every_code_the_code_has() -> None:
    assert sorted(documented_codes()) == sorted(REASONS)


@pytest.mark.parametrize("reason", sorted(RAW))
def test_raw_records_are_refused_with_their_code(reason: str) -> None:
    kind, raw = RAW[reason]
    validator = Validator(LIMITS, regression=False, clock=lambda: NOW)
    with pytest.raises(InvalidRecord) as caught:
        validator.event(raw) if kind == "event" else validator.label(raw)
    assert caught.value.reason == reason


def test_a_tombstone_is_empty_too() -> None:
    with pytest.raises(InvalidRecord) as caught:
        Validator(LIMITS, regression=False).event(None)
    assert caught.value.reason == "empty"


def test_label_wrong_type_for_a_regressor() -> None:
    validator = Validator(ValidationConfig(), regression=True, clock=time.time)
    with pytest.raises(InvalidRecord) as caught:
        validator.label(b'{"id": "e", "ts": 1700000000, "label": "high"}')
    assert caught.value.reason == "label_wrong_type"


def core(**overrides: Any) -> LearningCore:
    settings = {"name": "codes", "fallback": {"default": False}, **overrides}
    return LearningCore.from_config(load_config(None, settings, environ={}))


def reasons(outcome: Any) -> list[str]:
    return [r.reason for r in outcome.rejections]


def test_core_codes_duplicate_orphan_evicted_model_error() -> None:
    c = core()
    c.on_event(Event(id="1", ts=NOW, features={"x": 1.0}))
    assert reasons(c.on_event(Event(id="1", ts=NOW, features={"x": 1.0}))) == ["duplicate_event"]

    c = core(join={"ttl_events": 2})
    c.on_label(Label(id="ghost", ts=NOW, label=True))
    outcomes = [c.on_event(Event(id=str(i), ts=NOW, features={})) for i in range(4)]
    found = [r for outcome in outcomes for r in reasons(outcome)]
    assert "label_orphaned" in found

    c = core(join={"max_pending": 1})
    c.on_event(Event(id="a", ts=NOW, features={}))
    assert reasons(c.on_event(Event(id="b", ts=NOW, features={}))) == ["event_evicted"]

    numeric_only = "preprocessing.StandardScaler | linear_model.LogisticRegression"
    c = core(model={"spec": numeric_only})
    c.on_event(Event(id="s", ts=NOW, features={"city": "Lyon"}))
    outcome = c.on_label(Label(id="s", ts=NOW, label=True))
    assert reasons(outcome) == ["model_error"]

    c = core(model={"spec": numeric_only})
    c.on_event(Event(id="huge", ts=NOW, features={"x": 1e308}))
    c.on_event(Event(id="tiny", ts=NOW, features={"x": -1e308}))
    c.on_label(Label(id="huge", ts=NOW, label=True))
    assert reasons(c.on_label(Label(id="tiny", ts=NOW, label=False))) == ["model_non_finite"]


@pytest.mark.parametrize(
    ("labels", "refused", "accepted"),
    [
        # bool is not int: 1, 0 and 1.0 equal True and False but are not the configured classes.
        ((True, False), [1, 0, 1.0, 0.0], [True, False]),
        # int is not float: a classifier's classes are the values configured, type included.
        ((0, 1), [True, False, 1.0, 0.0], [0, 1]),
        ((0.0, 1.0), [0, 1, True], [0.0, 1.0]),
        # Listing both types accepts both.
        ((0, 1, 0.0, 1.0), [True, "1"], [0, 1, 0.0, 1.0]),
    ],
)
def test_validation_labels_are_type_exact(
    labels: tuple[Any, ...], refused: list[Any], accepted: list[Any]
) -> None:
    validator = Validator(ValidationConfig(labels=labels), regression=False, clock=lambda: NOW)

    def raw(value: Any) -> bytes:
        return json.dumps({"id": "e", "ts": NOW, "label": value}).encode()

    for value in refused:
        with pytest.raises(InvalidRecord) as caught:
            validator.label(raw(value))
        assert caught.value.reason == "label_not_allowed", value
        assert type(value).__name__ in str(caught.value), str(caught.value)
    for value in accepted:
        label = validator.label(raw(value))
        assert label.label == value and type(label.label) is type(value)
