"""The orjson fast path gives exactly what pydantic gives: the same record, or the same refusal.

``parse_event`` / ``parse_label`` try the fast path and fall back to pydantic; the reference is
the pydantic path alone (``_parse_event_validated`` / ``_parse_label_validated``).
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable
from datetime import UTC, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.config import ValidationConfig
from pipeline.kafka.records import (
    KIND_EVENT,
    KIND_LABEL,
    SENT_HEADER,
    SEQ_HEADER,
    Origin,
    int_header,
    seq_and_sent,
    to_item,
    to_items,
)
from pipeline.kafka.transport import Record
from pipeline.schemas import (
    MAX_ID_LENGTH,
    Event,
    InvalidRecord,
    Label,
    _fast_event,
    _fast_label,
    _parse_event_validated,
    _parse_label_validated,
    parse_event,
    parse_label,
)
from pipeline.validation import Validator, check_event, check_label, check_size

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def typed(value: Any) -> Any:
    """A value with the type of every part spelled out (1 != 1.0 != True; -0.0 != 0.0)."""
    if isinstance(value, dict):
        return ("dict", [(typed(k), typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    return (type(value).__name__, repr(value))


def snapshot(record: Any) -> Any:
    return (
        type(record),
        typed(record.__dict__),
        record.model_fields_set,
        record.__pydantic_extra__,
        record.__pydantic_private__,
        typed(record.model_dump()),
        record.model_dump_json(),
    )


def outcome(parse: Callable[[bytes | None], Any], raw: bytes | None) -> Any:
    try:
        return ("ok", snapshot(parse(raw)))
    except InvalidRecord as e:
        return ("invalid", e.reason, str(e))
    except Exception as e:  # what pydantic lets through must also get through the fast path
        return ("raised", type(e), e.args)


def assert_same(raw: bytes | None, kind: str) -> None:
    fast, reference = (
        (parse_event, _parse_event_validated)
        if kind == "event"
        else (parse_label, _parse_label_validated)
    )
    expected = outcome(reference, raw)
    assert outcome(fast, raw) == expected, raw
    # The fast path alone: when it answers, it answers what pydantic answers.
    direct = (_fast_event if kind == "event" else _fast_label)(raw)
    if direct is not None:
        assert ("ok", snapshot(direct)) == expected, raw
        assert direct == (Event if kind == "event" else Label).model_validate_json(raw)  # type: ignore[arg-type]


# JSON-ish values, near the edges of each type.
huge_ints = st.sampled_from(
    [
        2**53,
        2**53 + 1,
        2**63 - 1,
        2**63,
        -(2**63),
        -(2**63) - 1,
        2**64 - 1,
        2**64,
        10**30,
        -(10**30),
    ]
)
integers = st.one_of(st.integers(), st.integers(-(2**70), 2**70), huge_ints)
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1e20, 1e20),
    st.sampled_from([0.0, -0.0, 1.0, 1e308, 2.0**63, -(2.0**63), 2.0**64, 1.5e19]),
)
iso_times = st.one_of(
    st.datetimes(timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=-5))])).map(
        lambda d: d.isoformat()
    ),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.sampled_from(
        ["2024-01-01", "2024-13-01T00:00:00", "not a time", "", "9999-12-31T23:59:59-12:00"]
    ),
)
texts = st.one_of(
    st.text(max_size=8),
    st.text(string.ascii_letters, min_size=MAX_ID_LENGTH - 1, max_size=MAX_ID_LENGTH + 1),
    st.sampled_from(
        ["ground_truth", "human", "x" * 200, "x" * 201, "\ud800", "é" * 256, "é" * 257]
    ),
)
scalars = st.one_of(st.none(), st.booleans(), integers, floats, texts, iso_times)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
plain_feature = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**62), 2**62),
    st.floats(-1e18, 1e18),
    st.text(max_size=8),
)
feature_dicts = st.one_of(
    st.dictionaries(st.text(max_size=6), plain_feature, max_size=6),
    st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    json_values,
)
MISSING = object()


def optional(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(MISSING), values)


def payloads(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    extras = st.dictionaries(
        st.sampled_from(["extra", "Id", "feature", "labels"]), json_values, max_size=1
    )

    def build(drawn: dict[str, Any], extra: dict[str, Any], keep_extra: bool) -> dict[str, Any]:
        payload = {k: v for k, v in drawn.items() if v is not MISSING}
        return {**payload, **extra} if keep_extra else payload

    return st.builds(build, st.fixed_dictionaries(fields), extras, st.booleans())


ids = st.one_of(st.text(min_size=1, max_size=10), texts, json_values)
times = st.one_of(
    st.floats(0, 2e9), st.integers(0, 2**40), integers, floats, iso_times, json_values
)
event_payloads = payloads(
    {
        "id": optional(ids),
        "ts": optional(times),
        "features": optional(feature_dicts),
        "key": optional(st.one_of(st.none(), st.text(max_size=5), json_values)),
        "attributes": optional(feature_dicts),
    }
)
label_payloads = payloads(
    {
        "id": optional(ids),
        "ts": optional(times),
        "label": optional(st.one_of(plain_feature, json_values)),
        "source": optional(
            st.one_of(st.sampled_from(["ground_truth", "human", "Human"]), json_values)
        ),
        "reviewer": optional(st.one_of(st.none(), texts, json_values)),
        "answered_at": optional(st.one_of(st.none(), st.floats(0, 2e9), times)),
    }
)


def to_bytes(payload: Any, style: int) -> bytes:
    """JSON as a producer might write it: compact, spaced, or ASCII-escaped (NaN/Infinity
    spelled as Python's json writes them)."""
    if style == 0:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8", "surrogatepass"
        )
    if style == 1:
        return json.dumps(payload, indent=1).encode()
    return json.dumps(payload).encode()


def mangle(raw: bytes, how: int, at: int) -> bytes:
    """Near-JSON: cut short, trailing junk, bad UTF-8, a byte-order mark, a stray comma."""
    at = at % (len(raw) + 1)
    return [
        raw,
        raw[:at],
        raw + b"x",
        raw[:at] + b"\xff" + raw[at:],
        b"\xef\xbb\xbf" + raw,
        raw[:at] + b"," + raw[at:],
        b"  " + raw + b"\n",
    ][how % 7]


@SETTINGS
@given(event_payloads, st.integers(0, 2), st.integers(0, 20), st.integers(0, 10_000))
@example(
    {"id": "1", "ts": 3, "features": {"x": 1, "y": True, "z": 1.0, "s": "a", "n": None}}, 0, 0, 0
)
def test_events_agree_with_pydantic(payload: dict[str, Any], style: int, how: int, at: int) -> None:
    raw = to_bytes(payload, style)
    assert_same(mangle(raw, how, at) if how < 7 else raw, "event")


@SETTINGS
@given(label_payloads, st.integers(0, 2), st.integers(0, 20), st.integers(0, 10_000))
def test_labels_agree_with_pydantic(payload: dict[str, Any], style: int, how: int, at: int) -> None:
    raw = to_bytes(payload, style)
    assert_same(mangle(raw, how, at) if how < 7 else raw, "label")


@SETTINGS
@given(json_values)
def test_any_json_agrees_with_pydantic(value: Any) -> None:
    raw = to_bytes(value, 0)
    assert_same(raw, "event")
    assert_same(raw, "label")


@SETTINGS
@given(st.binary(max_size=40))
def test_arbitrary_bytes_agree_with_pydantic(raw: bytes) -> None:
    assert_same(raw, "event")
    assert_same(raw, "label")


# Number literals as written by hand (long mantissas, big exponents, big integers): orjson and
# pydantic must read them to the same value, or the fast path must step aside.
number_literals = st.from_regex(r"\A-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,25})?([eE][-+]?[0-9]{1,3})?\Z")


@SETTINGS
@given(number_literals, number_literals, number_literals)
@example("18446744073709551616", "1", "1")  # an int orjson would make a float
@example("-9223372036854775809", "9007199254740993", "1e400")
@example("1", "1e-400", "123456789012345678901234567890")
def test_number_literals_agree_with_pydantic(ts: str, feature: str, answered: str) -> None:
    features = f'{{"x":{feature},"y":{answered}}}'
    event = f'{{"id":"a","ts":{ts},"features":{features},"attributes":{{"z":{feature}}}}}'
    label = f'{{"id":"a","ts":{ts},"label":{feature},"answered_at":{answered}}}'
    assert_same(event.encode(), "event")
    assert_same(label.encode(), "label")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id":"1","ts":1,"features":{"a":1,"b":2,"a":3.5}}',  # duplicate keys: the last wins
        b'{"id":"1","ts":1,"id":"2","features":{}}',
        b'{"id":"1","ts":1,"features":{},"features":{"x":[1]}}',
        b'{"id":"1","ts":NaN,"features":{}}',
        b'{"id":"1","ts":1,"features":{"x":Infinity}}',
        b'{"id":"1","ts":1,"features":{"x":"a\x01"}}',  # a raw control character
        b'{"id":"1","ts":"2024-01-01T00:00:00Z","features":{}}',
        b'{"id":"1","ts":"2024-01-01T00:00:00+02:00","features":{},"key":"k","attributes":{"a":null}}',
        b'{"id":"1","ts":true,"features":{}}',
        b'{"id":"","ts":1,"features":{}}',
        b'{"id":1,"ts":1,"features":{}}',
        b'{"id":"1","ts":1,"features":[]}',
        b'{"id":"1","ts":1,"features":{},"key":1}',
        b'{"id":"1","ts":1,"features":{},"extra":1}',
        b'[{"id":"1","ts":1,"features":{}}]',
        b"null",
        b"",
        None,
        b"\xff\xfe",
    ],
)
def test_known_edges_agree(raw: bytes | None) -> None:
    assert_same(raw, "event")
    assert_same(raw, "label")


@SETTINGS
@given(
    st.text(min_size=1, max_size=20),
    st.one_of(st.floats(-1e15, 1e15), st.integers(-(2**53), 2**53)),
    st.dictionaries(st.text(max_size=6), plain_feature, max_size=9),
    st.booleans(),
)
def test_plain_records_take_the_fast_path(
    record_id: str, ts: float, features: dict[str, Any], with_key: bool
) -> None:
    """Without this, a fast path that always stepped aside would pass every test above."""
    event: dict[str, Any] = {"id": record_id, "ts": ts, "features": features}
    if with_key:
        event["key"] = record_id
    raw = orjson.dumps(event)
    fast = _fast_event(raw)
    assert fast is not None
    assert snapshot(fast) == snapshot(_parse_event_validated(raw))
    assert type(fast.ts) is float
    for value in (True, 3, 2.5, "yes", -0.0):
        label_raw = orjson.dumps({"id": record_id, "ts": ts, "label": value})
        label = _fast_label(label_raw)
        assert label is not None
        assert snapshot(label) == snapshot(_parse_label_validated(label_raw))


def test_the_validator_refuses_as_before() -> None:
    """Limits beyond the schema still apply to records built by the fast path."""
    validator = Validator(
        ValidationConfig(max_features=1, labels=(0, 1)), regression=False, clock=lambda: 0.0
    )
    with pytest.raises(InvalidRecord, match="2 features where at most 1") as err:
        validator.event(b'{"id":"1","ts":0,"features":{"a":1,"b":2}}')
    assert err.value.reason == "too_many_features"
    with pytest.raises(InvalidRecord) as err:
        validator.label(b'{"id":"1","ts":0,"label":2}')
    assert err.value.reason == "label_not_allowed"
    # Type-exact (issue 18): 1.0 is not the int class 1 unless validation.labels lists it.
    with pytest.raises(InvalidRecord) as err:
        validator.label(b'{"id":"1","ts":0,"label":1.0}')
    assert err.value.reason == "label_not_allowed"
    assert validator.label(b'{"id":"1","ts":0,"label":1}').label == 1


def reference_event(raw: bytes | None, limits: ValidationConfig, now: float) -> Event:
    """The validator's event path as it was: every check, one after the other."""
    check_size(raw, limits)
    event = parse_event(raw, limits.max_abs_value)  # magnitudes are checked as it parses
    check_event(event, limits, now)
    return event


@SETTINGS
@example({"s": "x" * 14}, 13, 1, 0.0, True)  # a character too long, in a short record
@example({"s": "x" * 14}, 14, 1, 0.0, True)
@given(
    st.dictionaries(
        st.text(max_size=3),
        st.one_of(
            st.text(max_size=40),
            st.text('é\n"\\\U0001f600a', max_size=40),  # escaped or wider than a byte
            st.integers(),
            st.none(),
        ),
        max_size=5,
    ),
    st.one_of(st.integers(1, 16), st.integers(30, 160)),  # below and above the record's size
    st.integers(1, 6),
    st.sampled_from([0.0, 1e9, 2e9]),
    st.booleans(),
)
def test_the_validator_checks_events_as_check_event(
    features: dict[str, Any], max_string: int, max_features: int, ts: float, ascii_only: bool
) -> None:
    """Skipping the string lengths of a record shorter than the limit changes no outcome."""
    limits = ValidationConfig(
        max_string_length=max_string, max_features=max_features, max_future_seconds=3600.0
    )
    validator = Validator(limits, regression=False, clock=lambda: 1e9)
    record = {"id": "1", "ts": ts, "features": features}
    raw = json.dumps(record, ensure_ascii=ascii_only, separators=(",", ":")).encode()
    assert outcome(validator.event, raw) == outcome(lambda r: reference_event(r, limits, 1e9), raw)


def test_to_item_reads_a_record_as_any_object_with_its_fields() -> None:
    validator = Validator(ValidationConfig(), regression=False)
    headers = [(SEQ_HEADER, b"4"), (SENT_HEADER, b"1700000000123")]
    for kind, value in (
        (KIND_EVENT, b'{"id":"1","ts":5,"features":{"x":1}}'),
        (KIND_LABEL, b'{"id":"1","ts":5,"label":true}'),
        (KIND_EVENT, b'{"id":"1"}'),
    ):
        record = Record("t", 2, 9, b"k", value, 1_700_000_000_000, headers)
        items = [to_item(r, kind, validator) for r in (record, SimpleNamespace(**record._asdict()))]
        for item in items:
            assert type(item.payload.origin) is Origin
        first, second = ((i.key, i.partition, i.offset, i.payload) for i in items)
        assert first[:3] == second[:3]
        assert type(first[3].parsed) is type(second[3].parsed)
        assert repr(first[3].parsed) == repr(second[3].parsed)
        assert (first[3].kind, first[3].origin, first[3].sent_ms) == (
            second[3].kind,
            second[3].origin,
            second[3].sent_ms,
        )
        assert first[3].origin == ("t", 2, 9, 1_700_000_000_000, b"k", value)
        assert first[3].sent_ms == 1700000000123


header_lists = st.lists(
    st.tuples(
        st.sampled_from(["seq", "sent_ms", "other"]),
        st.one_of(
            st.none(),
            st.integers(-(2**70), 2**70).map(lambda i: str(i).encode()),
            st.binary(max_size=4),
            st.sampled_from([b" 7 ", b"1_000", b"0", b"x"]),
        ),
    ),
    max_size=5,
)


@SETTINGS
@given(st.one_of(st.none(), header_lists))
def test_headers_read_in_one_pass_as_one_by_one(
    headers: list[tuple[str, bytes | None]] | None,
) -> None:
    record = SimpleNamespace(headers=headers)
    assert seq_and_sent(record) == (int_header(record, SEQ_HEADER), int_header(record, SENT_HEADER))


def reference_label(
    raw: bytes | None, limits: ValidationConfig, now: float, regression: bool
) -> Label:
    """The validator's label path as it was: every check, one after the other."""
    check_size(raw, limits)
    label = parse_label(raw)
    check_label(label, limits, now, regression)
    return label


label_values = st.one_of(
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.0, 1.0, -2.0, 0.5, 1e300, 2.0**63]),
    st.sampled_from(["a", "b", "", "1"]),
    st.integers(2**63, 2**64),
)


@SETTINGS
@given(
    label_values,
    st.one_of(st.none(), st.just((True, 1, "a")), st.just((0, 1))),
    st.booleans(),
    st.one_of(st.none(), st.just(3600.0)),
    st.one_of(st.none(), st.just(5e8)),
    st.sampled_from([0.0, 1e9, 1e9 + 3601.0, 2e9]),
)
def test_the_validator_checks_labels_as_check_label(
    value: Any,
    labels: tuple[Any, ...] | None,
    regression: bool,
    future: float | None,
    min_ts: float | None,
    ts: float,
) -> None:
    """The usual label types' checks written out refuse what check_label refuses."""
    limits = ValidationConfig(labels=labels, max_future_seconds=future, min_ts=min_ts)
    validator = Validator(limits, regression=regression, clock=lambda: 1e9)
    raw = json.dumps({"id": "1", "ts": ts, "label": value}).encode()
    assert outcome(validator.label, raw) == outcome(
        lambda r: reference_label(r, limits, 1e9, regression), raw
    )


def item_outcome(item: Any) -> Any:
    incoming = item.payload
    parsed = incoming.parsed
    if isinstance(parsed, InvalidRecord):
        seen = ("invalid", parsed.reason, str(parsed))
    elif isinstance(parsed, Event | Label):
        seen = ("ok", snapshot(parsed))
    else:  # a learner's published prediction
        seen = ("ok", type(parsed), repr(parsed))
    key = (typed(item.key[0]), item.key[1:])
    origin = tuple(incoming.origin)
    return (key, item.partition, item.offset, incoming.kind, origin, incoming.sent_ms, seen)


wire_values = st.one_of(
    st.sampled_from(
        [
            b'{"id":"1","ts":5,"features":{"x":1}}',
            b'{"id":"2","ts":7.5,"features":{"x":"abcdefghijklmnop","y":null}}',
            b'{"id":"1","ts":5,"label":true}',
            b'{"id":"1","ts":5,"label":0.5}',
            b'{"id":"1","ts":4e9,"label":1}',
            b'{"id":"1","ts":5}',
            b"not json",
            b"",
        ]
    ),
    st.none(),
    st.binary(max_size=10),
)


@SETTINGS
@given(
    st.lists(
        st.tuples(
            wire_values, st.one_of(st.none(), header_lists), st.one_of(st.none(), st.integers(0, 9))
        ),
        max_size=6,
    ),
    st.sampled_from([KIND_EVENT, KIND_LABEL, "prediction"]),
    st.booleans(),
    st.booleans(),
    st.sampled_from([16, 1024]),
)
@example(  # the replay's own records
    [
        (b'{"id":"1","ts":5,"features":{"x":1}}', [("seq", b"4"), ("sent_ms", b"17")], 5000),
        (b'{"id":"1","ts":5,"label":true}', [("seq", b"5"), ("sent_ms", b"18")], 5000),
        (b'{"id":"1","ts":5}', [("seq", b"6"), ("sent_ms", b"x")], None),
    ],
    KIND_EVENT,
    True,
    False,
    1024,
)
def test_to_items_equals_to_item_record_by_record(
    drawn: list[tuple[bytes | None, Any, int | None]],
    kind: str,
    as_records: bool,
    regression: bool,
    max_string: int,
) -> None:
    limits = ValidationConfig(max_string_length=max_string, max_future_seconds=3600.0)
    validator = Validator(limits, regression=regression, clock=lambda: 1e9)
    records: list[Any] = []
    for offset, (value, headers, timestamp) in enumerate(drawn):
        record = Record("t", 3, offset, b"k", value, timestamp, headers)
        records.append(record if as_records else SimpleNamespace(**record._asdict()))
    expected = [item_outcome(to_item(r, kind, validator)) for r in records]
    assert [item_outcome(i) for i in to_items(records, ("t", 3), kind, validator)] == expected
