from typing import Any

import pytest
from river import datasets, evaluate

from pipeline.config import load_config
from pipeline.core import LearningCore
from pipeline.models import make_metric, parse_model_spec
from pipeline.schemas import Event, Label
from producers.schedule import parse_delay, schedule
from producers.sources import open_source


def core_for(**overrides: Any) -> LearningCore:
    return LearningCore.from_config(load_config(None, {"name": "unit", **overrides}, environ={}))


def run_core(core: LearningCore, source: str, delay: str) -> None:
    for emission in schedule(open_source(source), parse_delay(delay)):
        record = emission.record
        if emission.kind == "event":
            core.on_event(Event(id=record.id, ts=emission.ts, features=record.features))
        else:
            core.on_label(Label(id=record.id, ts=emission.ts, label=record.label))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("source", "dataset", "spec", "metric", "delay"),
    [
        (
            "river:Phishing",
            datasets.Phishing,
            "preprocessing.StandardScaler | linear_model.LogisticRegression",
            "ROCAUC",
            50,
        ),
        (
            "river:Phishing",
            datasets.Phishing,
            "tree.HoeffdingTreeClassifier(grace_period=50)",
            "Accuracy",
            7,
        ),
        (  # the speed benchmark's setup (benchmarks/run.py): labels counted, windows of hits
            "river:Bananas",
            datasets.Bananas,
            "preprocessing.StandardScaler | linear_model.LogisticRegression",
            "Accuracy",
            50,
        ),
        (
            "river:TrumpApproval",
            datasets.TrumpApproval,
            "preprocessing.StandardScaler | linear_model.LinearRegression",
            "MAE",
            20,
        ),
    ],
)
def test_core_equals_progressive_val_score(
    source: str, dataset: Any, spec: str, metric: str, delay: int
) -> None:
    core = core_for(model={"spec": spec}, evaluation={"metric": metric})
    run_core(core, source, str(delay))
    expected = evaluate.progressive_val_score(
        dataset(), parse_model_spec(spec), make_metric(metric), delay=delay
    )
    assert core.report()["metrics"]["model"][metric] == expected.get()


def test_fallback_serves_until_promotion_then_model() -> None:
    core = core_for(
        model={"spec": "preprocessing.StandardScaler | linear_model.LogisticRegression"},
        evaluation={"metric": "Accuracy"},
        fallback={"default": False},
        gating={"min_labels": 50, "window": 50, "margin": 0.01, "confidence_threshold": 0.0},
    )
    run_core(core, "river:Phishing", "10")
    report = core.report()
    assert report["promotions"], "the model beats always-False on Phishing"
    first = report["promotions"][0]
    assert first["label_index"] >= 50
    assert first["model_metric"] > first["fallback_metric"] + 0.01
    served = report["predictions_by_source"]
    assert served["default"] >= 50 and served["model"] > 0
    assert served["default"] + served["model"] == report["events"] == 1250
    assert report["labels"] == 1250


def test_confidence_threshold_sends_unsure_predictions_to_the_fallback() -> None:
    core = core_for(
        fallback={"default": False},
        gating={"min_labels": 0, "window": 5, "margin": 0.0, "confidence_threshold": 0.99},
        evaluation={"metric": "Accuracy"},
    )
    core.state.gating.mode = "serving"
    result = core.on_event(Event(id="1", ts=0, features={"x": 1.0}))
    assert result.prediction is not None
    assert result.prediction.source == "default"  # an untrained model is 50/50: not confident


def test_duplicate_event_and_label_counted_once() -> None:
    core = core_for(fallback={"default": 0})
    assert core.on_event(Event(id="a", ts=0, features={"x": 1.0})).prediction is not None
    duplicate = core.on_event(Event(id="a", ts=0, features={"x": 1.0}), origin="second copy")
    assert duplicate.prediction is None and duplicate.status == "rejected"
    assert [(r.reason, r.origin) for r in duplicate.rejections] == [
        ("duplicate_event", "second copy")
    ]
    assert core.on_label(Label(id="a", ts=1, label=1)).status == "learned"
    assert core.on_label(Label(id="a", ts=1, label=1)).status == "duplicate"
    report = core.report()
    assert report["events"] == 1 and report["labels"] == 1
    assert report["dead_letters"] == {"duplicate_event": 1}
    assert report["duplicate_labels"] == 1


def test_label_before_event_is_learned_when_the_event_comes() -> None:
    core = core_for()
    assert core.on_label(Label(id="a", ts=0, label=True)).status == "parked"
    result = core.on_event(Event(id="a", ts=0, features={"x": 1.0}))
    assert result.learned and result.prediction is not None
    assert core.state.labels == 1 and len(core.state.join) == 0


def test_unlabelled_events_expire_and_are_counted() -> None:
    core = core_for(join={"ttl_events": 3})
    for i in range(10):
        core.on_event(Event(id=str(i), ts=float(i), features={"x": float(i)}))
    report = core.report()
    assert report["expired_unlabelled"] == 6
    assert report["pending_events"] == 4


def test_null_features_are_missing_not_none() -> None:
    core = core_for()
    core.on_event(Event(id="a", ts=0, features={"x": None, "y": 2.0}))
    assert core.state.join.pending["a"].x == {"y": 2.0}


def test_a_model_that_raises_is_served_by_the_fallback_and_learning_goes_on() -> None:
    core = core_for(
        model={"spec": "linear_model.LogisticRegression"},
        fallback={"default": False},
        evaluation={"metric": "Accuracy"},
    )
    for i in range(20):
        # A string feature makes the linear model raise (it multiplies weights by values).
        x: dict[str, Any] = {"x": "oops"} if i % 5 == 0 else {"x": float(i % 2)}
        outcome = core.on_event(Event(id=str(i), ts=float(i), features=x), origin=f"e{i}")
        assert outcome.prediction is not None  # always served
        if i % 5 == 0:
            assert outcome.prediction.source == "default"
            assert outcome.rejections[0].reason == "model_error"
            assert "predict raised TypeError" in outcome.rejections[0].message
        label = core.on_label(Label(id=str(i), ts=float(i), label=i % 2 == 1), origin=f"l{i}")
        assert label.learned
        if i % 5 == 0:
            assert [r.reason for r in label.rejections] == ["model_error"]
            assert label.rejections[0].origin == f"l{i}"
    report = core.report()
    assert report["labels"] == 20
    assert report["model_errors"] == 8  # 4 predictions and 4 learns
    assert report["dead_letters"] == {"model_error": 8}
    assert report["metrics"]["model"]["Accuracy"] > 0.5  # it kept learning from the rest


def test_full_join_buffer_evicts_the_oldest_and_says_so() -> None:
    core = core_for(join={"ttl_events": None, "max_pending": 3})
    rejections = []
    for i in range(10):
        outcome = core.on_event(Event(id=str(i), ts=float(i), features={"x": 1.0}), origin=i)
        rejections.extend(outcome.rejections)
    assert [(r.reason, r.origin) for r in rejections] == [("event_evicted", i) for i in range(7)]
    report = core.report()
    assert report["pending_events"] == 3
    assert report["expired_unlabelled"] == 7
    assert report["events"] == report["pending_events"] + report["expired_unlabelled"]


def test_a_label_whose_event_never_comes_is_dead_lettered_after_the_ttl() -> None:
    core = core_for(join={"ttl_events": 2})
    core.on_label(Label(id="ghost", ts=0.0, label=True), origin="ghost-origin")
    rejected = []
    for i in range(4):
        rejected += core.on_event(Event(id=str(i), ts=float(i), features={"x": 1.0})).rejections
    assert [(r.reason, r.origin) for r in rejected] == [("label_orphaned", "ghost-origin")]
    assert core.report()["expired_labels"] == 1


def test_events_at_the_end_of_their_ttl_expire_rather_than_evicted_from_a_full_buffer() -> None:
    # ttl_events == max_pending, as the defaults are: an event lives through ttl_events more
    # events, so the buffer would hold one more than max_pending; the one at the end of its TTL
    # expires (counted, not dead-lettered), nothing is evicted.
    core = core_for(join={"ttl_events": 5, "max_pending": 5})
    rejections = []
    for i in range(20):
        outcome = core.on_event(Event(id=str(i), ts=float(i), features={"x": 1.0}), origin=i)
        rejections.extend(outcome.rejections)
    assert rejections == []
    report = core.report()
    assert report["dead_letters"] == {}
    assert report["pending_events"] == 5
    assert report["expired_unlabelled"] == 15
    # Beyond the TTL's needs, capacity still evicts (and dead-letters) the oldest.
    core = core_for(join={"ttl_events": 10, "max_pending": 5})
    reasons = []
    for i in range(20):
        outcome = core.on_event(Event(id=str(i), ts=float(i), features={"x": 1.0}), origin=i)
        reasons += [(r.reason, r.origin) for r in outcome.rejections]
    assert reasons == [("event_evicted", i) for i in range(15)]


def test_pending_events_keep_their_bytes_once_and_are_bounded_in_bytes() -> None:
    """The edge's origins (pipeline.kafka.records): a pending event keeps its features, not its
    record's bytes too; evicted over join.max_pending_bytes, it is dead-lettered with its value
    (the event re-serialised), which reads back as the same event."""
    import pickle

    import orjson

    from pipeline.kafka.records import EVENT_ORIGINS, Origin
    from pipeline.schemas import parse_event

    core = core_for(join={"ttl_events": None, "max_pending": 1000, "max_pending_bytes": 20_000})
    core.keep_origins(EVENT_ORIGINS)
    raws, rejections = [], []
    for i in range(100):
        raw = orjson.dumps(
            {"id": f"e{i}", "ts": float(i), "features": {"x": float(i), "s": "v" * 150}}
        )
        raws.append(raw)
        origin = Origin("events", 0, i, None, f"e{i}".encode(), raw)
        rejections += core.on_event(Event.model_validate_json(raw), origin).rejections
    join = core.state.join
    assert 20_000 - 250 < join.pending_bytes <= 20_000  # record bytes: key and value
    assert all(p.origin.value is None for p in join.pending.values())
    assert [r.reason for r in rejections] == ["event_evicted"] * (100 - len(join))
    for i, rejection in enumerate(rejections):
        assert rejection.origin[:3] == ("events", 0, i)
        again = parse_event(rejection.origin.value)
        assert again == Event.model_validate_json(raws[i])
    # The checkpoint holds each pending event's bytes about once, not twice.
    pickled = len(pickle.dumps(join))
    assert pickled < 1.5 * join.pending_bytes, (pickled, join.pending_bytes)


def test_a_duplicate_event_long_after_the_join_ttl_is_still_caught() -> None:
    import pickle

    config = load_config(None, {"name": "unit", "join": {"ttl_events": 50}}, environ={})
    core = LearningCore.from_config(config)
    for i in range(1500):
        assert core.on_event(Event(id=f"e{i}", ts=float(i), features={"x": 1.0})).rejections == ()
        if i % 3 == 0:
            core.on_label(Label(id=f"e{i}", ts=float(i), label=True))
    # Through a checkpoint too: the memory of ids is part of the state.
    core = LearningCore.from_config(config, pickle.loads(pickle.dumps(core.state)))
    for i in (0, 1, 5, 1400):  # labelled or not, 1,450+ and 50+ events (the TTL) back
        outcome = core.on_event(Event(id=f"e{i}", ts=2000.0, features={"x": 1.0}))
        assert [r.reason for r in outcome.rejections] == ["duplicate_event"], i
    assert core.report()["dead_letters"] == {"duplicate_event": 4}
    assert core.state.events == 1500  # a duplicate is not an event of the stream
