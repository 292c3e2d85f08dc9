import itertools
import random
from collections.abc import Iterator
from typing import Any, cast

import pytest
from river import datasets, stream

from producers.schedule import Emission, LabelDelay, parse_delay, schedule
from producers.sources import SourceRecord, open_source

START = 1_700_000_000.0


def river_order(rows: list[SourceRecord], delay: LabelDelay | None) -> list[tuple[str, str]]:
    """(kind, id) as simulate_qa yields them; every row must have a label."""
    data: Any = (({"t": r.ts}, r.label) for r in rows)
    qa: Any
    if delay is None:
        qa = stream.simulate_qa(data, moment=None, delay=None)
    elif delay.events is not None:
        qa = stream.simulate_qa(data, moment=None, delay=delay.events)
    else:
        qa = stream.simulate_qa(data, moment="t", delay=cast(Any, delay.seconds))
    return [("event" if y is None else "label", str(i)) for i, _, y in qa]


def kinds(emissions: Iterator[Emission]) -> list[tuple[str, str]]:
    return [(e.kind, e.record.id) for e in emissions]


def merge_keys(emissions: list[Emission]) -> list[tuple[float, int, int]]:
    return [(e.ts, 0 if e.kind == "label" else 1, e.seq) for e in emissions]


def rows_at(times: list[float]) -> list[SourceRecord]:
    return [SourceRecord(str(i), t, {"t": t}, i) for i, t in enumerate(times)]


@pytest.mark.parametrize("delay", [0, 1, 50])
def test_event_delays_reproduce_simulate_qa_on_phishing(delay: int) -> None:
    ours = kinds(schedule(open_source("river:Phishing"), LabelDelay(events=delay)))
    river = [
        ("event" if y is None else "label", str(i))
        for i, _, y in stream.simulate_qa(datasets.Phishing(), moment=None, delay=delay)
    ]
    assert ours == river


def test_delay_zero_is_delay_one_is_no_delay_in_river() -> None:
    # simulate_qa queues a label after releasing what is due, so delay=0 waits for the next event.
    rows = rows_at([float(i) for i in range(5)])
    orders = [river_order(rows, d) for d in (None, LabelDelay(events=0), LabelDelay(events=1))]
    assert orders[0] == orders[1] == orders[2]
    assert kinds(schedule(rows, LabelDelay(events=0))) == orders[0]


@pytest.mark.parametrize("ordered", [True, False])
def test_random_streams_reproduce_simulate_qa(ordered: bool) -> None:
    rng = random.Random(7)
    for _ in range(300):
        steps = [rng.choice([0.0, 0.0, 0.5, 1.0, 2.5]) for _ in range(rng.randint(0, 25))]
        times = list(itertools.accumulate(steps)) if ordered else [rng.uniform(0, 9) for _ in steps]
        rows = rows_at(times)
        if rng.random() < 0.5:
            delay = LabelDelay(events=rng.randint(0, 6))
        else:
            delay = LabelDelay(seconds=rng.choice([0.0, 0.5, 1.0, 2.5, 4.0]))
        assert kinds(schedule(rows, delay)) == river_order(rows, delay), (times, delay)


@pytest.mark.parametrize("delay", ["0", "1", "3", "50", "0.5s", "1s", "2.5s", "10s"])
def test_emissions_are_sorted_by_the_merge_key(delay: str) -> None:
    emissions = list(schedule(open_source("river:Phishing"), parse_delay(delay)))
    keys = merge_keys(emissions)
    assert keys == sorted(keys)
    assert [e.seq for e in emissions] == list(range(len(emissions)))


def test_merge_key_holds_for_strict_times_or_positive_time_delays() -> None:
    rng = random.Random(3)
    for _ in range(200):
        strict = rows_at(list(itertools.accumulate(rng.choice([0.5, 1.0, 2.0]) for _ in range(20))))
        ties = rows_at(list(itertools.accumulate(rng.choice([0.0, 1.0, 2.0]) for _ in range(20))))
        for rows, delay in [
            (strict, LabelDelay(events=rng.randint(0, 4))),
            (ties, LabelDelay(seconds=rng.choice([0.5, 1.0, 3.0]))),
        ]:
            keys = merge_keys(list(schedule(rows, delay)))
            assert keys == sorted(keys)


def test_where_the_merge_key_and_river_disagree() -> None:
    # Event delay over tied times: label 0 is revealed before event 2, after event 1 (same time).
    emissions = list(schedule(rows_at([0.0, 1.0, 1.0]), LabelDelay(events=2)))
    assert [(e.kind, e.record.id, e.ts) for e in emissions[:4]] == [
        ("event", "0", 0.0),
        ("event", "1", 1.0),
        ("label", "0", 1.0),
        ("event", "2", 1.0),
    ]
    # Zero time delay: a label comes after its own event, at the same time.
    emissions = list(schedule(rows_at([0.0, 1.0]), LabelDelay(seconds=0.0)))
    assert [(e.kind, e.record.id, e.ts) for e in emissions] == [
        ("event", "0", 0.0),
        ("label", "0", 0.0),
        ("event", "1", 1.0),
        ("label", "1", 1.0),
    ]


def test_label_times_for_event_delays() -> None:
    for d in (1, 50):
        for e in schedule(open_source("river:Phishing"), LabelDelay(events=d)):
            if e.kind == "label":
                assert e.ts == START + (int(e.record.id) + d) * 1.0
    labels = [
        e for e in schedule(open_source("river:Phishing"), LabelDelay(0)) if e.kind == "label"
    ]
    assert all(e.ts == START + int(e.record.id) + 1 for e in labels)  # before the next event


def test_in_stream_labels_carry_the_time_of_the_event_they_precede() -> None:
    rows = rows_at([0.0, 0.0, 3.0, 7.0, 7.5])
    emissions = list(schedule(rows, LabelDelay(events=2)))
    for e, after in itertools.pairwise(emissions):
        if e.kind == "label" and after.kind == "event":
            assert e.ts == after.ts


def test_trailing_labels_extend_a_regular_grid_exactly() -> None:
    from producers.sources import SourceOptions

    options = SourceOptions(start=START, interval=0.1, limit=40)
    emissions = list(schedule(open_source("river:Phishing", options), LabelDelay(5), 0.1))
    labels = [e for e in emissions if e.kind == "label"]
    # start + i * 0.1 + k * 0.1 would be off by an ulp for some of these.
    assert all(e.ts == START + (int(e.record.id) + 5) * 0.1 for e in labels)


def test_trailing_labels_off_the_grid_follow_the_last_event() -> None:
    rows = rows_at([0.0, 10.0, 11.0, 30.0])
    emissions = list(schedule(rows, LabelDelay(events=3), interval=2.0))
    assert [(e.kind, e.record.id, e.ts) for e in emissions[-3:]] == [
        ("label", "1", 32.0),
        ("label", "2", 34.0),
        ("label", "3", 36.0),
    ]


def test_time_delay_with_ties_reveals_labels_first() -> None:
    rows = [SourceRecord(str(i), ts, {}, True) for i, ts in enumerate([0.0, 5.0, 10.0, 12.0])]
    got = [(e.kind, e.record.id, e.ts) for e in schedule(rows, LabelDelay(seconds=5.0))]
    assert got == [
        ("event", "0", 0.0),
        ("label", "0", 5.0),  # due exactly at the next event: before it
        ("event", "1", 5.0),
        ("label", "1", 10.0),
        ("event", "2", 10.0),
        ("event", "3", 12.0),
        ("label", "2", 15.0),
        ("label", "3", 17.0),
    ]


def test_unlabelled_records_emit_no_label() -> None:
    rows = [SourceRecord("a", 0.0, {}, None), SourceRecord("b", 1.0, {}, 1)]
    for delay in (LabelDelay(events=0), LabelDelay(events=5), LabelDelay(seconds=0.5)):
        assert kinds(schedule(rows, delay)) == [("event", "a"), ("event", "b"), ("label", "b")]
    assert [e.seq for e in schedule(rows, LabelDelay(0))] == [0, 1, 2]


def test_streams_without_materialising_the_source() -> None:
    def endless() -> Iterator[SourceRecord]:
        for i in itertools.count():
            yield SourceRecord(str(i), float(i), {}, True)

    first = list(itertools.islice(schedule(endless(), LabelDelay(events=2)), 7))
    assert kinds(iter(first)) == [
        ("event", "0"),
        ("event", "1"),
        ("label", "0"),
        ("event", "2"),
        ("label", "1"),
        ("event", "3"),
        ("label", "2"),
    ]


def test_no_records_no_emissions() -> None:
    assert list(schedule([], LabelDelay(events=3))) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50", LabelDelay(events=50)),
        (7, LabelDelay(events=7)),
        ("0", LabelDelay(events=0)),
        (" 12 ", LabelDelay(events=12)),
        ("30s", LabelDelay(seconds=30.0)),
        ("0s", LabelDelay(seconds=0.0)),
        ("250ms", LabelDelay(seconds=0.25)),
        ("5m", LabelDelay(seconds=300.0)),
        ("1h", LabelDelay(seconds=3600.0)),
        ("2d", LabelDelay(seconds=172800.0)),
        ("1.5s", LabelDelay(seconds=1.5)),
        ("30 s", LabelDelay(seconds=30.0)),
    ],
)
def test_parse_delay(text: str, expected: LabelDelay) -> None:
    assert parse_delay(text) == expected


@pytest.mark.parametrize("text", ["-1", -1, "soon", "5 parsecs", "1.5", "", "s", "1e3s", "2 x"])
def test_parse_delay_errors(text: str) -> None:
    with pytest.raises(ValueError, match="label delay"):
        parse_delay(text)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"events": 1, "seconds": 1.0},
        {"events": -1},
        {"seconds": -0.5},
        {"seconds": float("inf")},
    ],
)
def test_label_delay_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="label delay"):
        LabelDelay(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("interval", [0.0, -1.0, float("nan")])
def test_schedule_rejects_a_bad_interval(interval: float) -> None:
    with pytest.raises(ValueError, match="interval"):
        schedule([], LabelDelay(events=1), interval)
