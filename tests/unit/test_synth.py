from collections.abc import Hashable
from typing import Any, cast

import pytest
from river import datasets, tree

from producers.sources import SourceError, SourceOptions, SourceRecord, open_source
from producers.synth import SYNTH_GENERATORS, _DriftStream, drift_position, open_synth

START = 1_700_000_000.0


def read(spec: str, **options: object) -> list[SourceRecord]:
    return list(open_synth(spec, SourceOptions(**options)))  # type: ignore[arg-type]


def test_generators() -> None:
    assert list(SYNTH_GENERATORS) == ["SEA", "Agrawal"]


@pytest.mark.parametrize("spec", ["synth:SEA:n=300,width=50", "Agrawal:n=300,before=2,after=7"])
def test_deterministic(spec: str) -> None:
    assert read(spec) == read(spec)
    assert read(spec) != read(spec.replace("n=300", "n=300,seed=7"))


def test_n_limit_ids_and_times() -> None:
    assert len(read("SEA")) == 10_000
    assert len(read("SEA:n=50")) == 50
    assert len(read("SEA:n=0")) == 0
    rows = read("SEA:n=50", limit=5, start=10.0, interval=0.5)
    assert [r.id for r in rows] == ["0", "1", "2", "3", "4"]
    assert [r.ts for r in rows] == [10.0 + 0.5 * i for i in range(5)]
    assert rows == read("SEA:n=50", start=10.0, interval=0.5)[:5]
    assert len(read("SEA:n=3", limit=10)) == 3


def test_sea_features_are_named_and_typed() -> None:
    rows = read("SEA:n=20")
    for r in rows:
        assert list(r.features) == ["x0", "x1", "x2"]
        assert all(type(v) is float for v in r.features.values())
        assert type(r.label) is bool
        assert r.key is None and r.attributes == {}


def test_agrawal_keeps_river_features() -> None:
    rows = read("Agrawal:n=40,drift_at=40")[:38]
    # Well before the drift it is River's Agrawal(seed=42) record for record (River's sigmoid
    # makes record drift_at - 1 a coin toss between the two concepts).
    theirs = list(datasets.synth.Agrawal(seed=42).take(38))
    assert [(r.features, r.label) for r in rows] == theirs
    assert type(rows[0].label) is int and type(rows[0].features["age"]) is int


def test_defaults() -> None:
    assert drift_position("synth:SEA") == 5_000
    assert drift_position("SEA:n=101") == 50
    assert drift_position("Agrawal:n=10,drift_at=0") == 0
    # Defaults spelled out give the same stream.
    explicit = "SEA:seed=42,n=200,drift_at=100,width=1,before=0,after=3,noise=0.0"
    assert read("SEA:n=200") == read(explicit)


def test_matches_river_concept_drift_stream() -> None:
    def build(cls: type) -> list:
        return list(
            cls(
                stream=datasets.synth.SEA(seed=3, variant=1),
                drift_stream=datasets.synth.SEA(seed=4, variant=2),
                position=60,
                width=10,
                seed=3,
            ).take(150)
        )

    ours = read("SEA:seed=3,n=150,drift_at=60,width=10,before=1,after=2")
    assert build(_DriftStream) == build(datasets.synth.ConceptDriftStream)
    assert [({f"x{i}": v for i, v in x.items()}, y) for x, y in build(_DriftStream)] == [
        (r.features, r.label) for r in ours
    ]


def test_abrupt_drift_far_away_does_not_overflow() -> None:
    # River's own ConceptDriftStream overflows math.exp here.
    rows = read("SEA:n=4000,drift_at=3000")
    assert len(rows) == 4000


def test_sea_drift_is_real() -> None:
    spec = "SEA:n=4000,before=0,after=3"
    at = drift_position(spec)
    rows = read(spec)

    def rule_accuracy(part: list[SourceRecord]) -> float:
        # SEA variant 0's concept, exactly.
        hits = [(r.features["x0"] + r.features["x1"] > 8) == r.label for r in part]  # type: ignore[operator]
        return sum(hits) / len(hits)

    assert rule_accuracy(rows[:at]) == 1.0
    # Sums in (8, 9.5] flip class: about 13% of the records.
    assert rule_accuracy(rows[at + 5 :]) < 0.92

    model = tree.HoeffdingTreeClassifier(grace_period=100)
    for r in rows[: at - 500]:
        model.learn_one(cast(dict[Hashable, Any], r.features), r.label)

    def model_accuracy(part: list[SourceRecord]) -> float:
        hits = [model.predict_one(cast(dict[Hashable, Any], r.features)) == r.label for r in part]
        return sum(hits) / len(hits)

    before, after = model_accuracy(rows[at - 500 : at]), model_accuracy(rows[at + 5 :])
    assert before - after > 0.05, (before, after)


def test_agrawal_drift_changes_label_rate() -> None:
    spec = "Agrawal:n=4000"
    at = drift_position(spec)
    labels = [r.label for r in read(spec)]
    rate_before = sum(labels[:at]) / at  # type: ignore[arg-type]
    rate_after = sum(labels[at + 5 :]) / len(labels[at + 5 :])  # type: ignore[arg-type]
    assert abs(rate_before - rate_after) > 0.1, (rate_before, rate_after)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("synth:Sea", "unknown generator 'Sea'"),
        ("Hyperplane:n=3", "unknown generator 'Hyperplane'"),
        ("", "unknown generator ''"),
        ("SEA:depth=3", "unknown key 'depth'"),
        ("Agrawal:noise=0.1", "unknown key 'noise'"),
        ("SEA:n=ten", "n='ten' is not an integer"),
        ("SEA:seed=1.5", "seed='1.5' is not an integer"),
        ("SEA:n=1_000", "n='1_000' is not an integer"),
        ("SEA:n", "'n' is not key=value"),
        ("SEA:", "'' is not key=value"),
        ("SEA:n=5,n=6", "'n' is given twice"),
        ("SEA:n=10,drift_at=11", "drift_at=11 is not between 0 and n=10"),
        ("SEA:drift_at=-1", "drift_at=-1 is not between 0"),
        ("SEA:n=-1", "n=-1 is negative"),
        ("SEA:width=0", "width=0 must be at least 1"),
        ("SEA:before=4", "before=4 is not a SEA variant (0..3)"),
        ("Agrawal:after=10", "after=10 is not a Agrawal classification_function (0..9)"),
        ("SEA:noise=2", "noise='2' is not a number in [0, 1]"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(SourceError) as info:
        open_synth(spec, SourceOptions())
    assert message in str(info.value)
    if "generator" in message or "key" in message or "integer" in message:
        assert "synth:<Generator>[:key=value,...]" in str(info.value)
    with pytest.raises(SourceError):
        drift_position(spec)


def test_through_open_source() -> None:
    rows = list(open_source("synth:SEA:seed=1,n=100"))
    assert len(rows) == 100 and rows == read("SEA:seed=1,n=100")
    assert rows[0].ts == START and list(rows[0].features) == ["x0", "x1", "x2"]
    assert len(list(open_source("synth:Agrawal:n=50", SourceOptions(limit=7)))) == 7
    with pytest.raises(SourceError, match="unknown generator 'Nope'"):
        open_source("synth:Nope")
    with pytest.raises(SourceError, match="unknown generator ''"):
        open_source("synth:")
    with pytest.raises(SourceError, match="limit must be at least 0"):
        open_source("synth:SEA", SourceOptions(limit=-1))
