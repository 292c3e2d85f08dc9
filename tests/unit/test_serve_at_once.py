"""``ordering.serve: immediate``: the core's fetch-time answer, and the config it allows."""

import pickle
from typing import Any

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.core import LearningCore
from pipeline.schemas import Event, Label
from producers.schedule import parse_delay, schedule
from producers.sources import open_source

GATED = {
    "model": {"spec": "preprocessing.StandardScaler | linear_model.LogisticRegression"},
    "evaluation": {"metric": "Accuracy"},
    "fallback": {"default": False},
    "gating": {"min_labels": 50, "window": 50, "margin": 0.01, "confidence_threshold": 0.0},
}


def core_for(**overrides: Any) -> LearningCore:
    return LearningCore.from_config(load_config(None, {"name": "unit", **overrides}, environ={}))


def learning_state(core: LearningCore) -> dict[str, bytes]:
    """The state's parts, pickled; the model only by what it learnt: a River model may note a
    feature it is asked about (its weights and the scaler's statistics are defaultdicts, so a
    prediction adds zero entries), which on_event's own prediction does for the same event."""
    state = vars(core.state)
    parts = {k: pickle.dumps(v) for k, v in state.items() if k != "model"}
    scaler, logistic = state["model"].steps.values()
    parts["model"] = pickle.dumps(
        (
            {k: v for k, v in scaler.counts.items() if v},
            {k: w for k, w in logistic._weights.items() if w},
            logistic.intercept,
        )
    )
    return parts


def test_serve_at_once_is_what_on_event_publishes_and_changes_nothing() -> None:
    core = core_for(**GATED)
    served_by_model = 0
    for emission in schedule(open_source("river:Phishing"), parse_delay("10")):
        record = emission.record
        if emission.kind == "label":
            core.on_label(Label(id=record.id, ts=emission.ts, label=record.label))  # type: ignore[arg-type]
            continue
        event = Event(id=record.id, ts=emission.ts, features=record.features)
        before = learning_state(core)
        at_once = core.serve_at_once(event)
        assert learning_state(core) == before  # nothing learnt, counted or joined
        assert at_once is not None
        assert at_once == core.on_event(event).prediction_json()
        served_by_model += b'"source":"model"' in at_once
    # Both paths were compared: before the model's promotion and after it.
    assert core.report()["promotions"] and served_by_model > 0


def test_serve_at_once_skips_an_event_the_join_holds() -> None:
    core = core_for(**GATED)
    event = Event(id="e1", ts=1.0, features={"x": 1.0})
    core.on_event(event)
    assert core.serve_at_once(event) is None
    assert core.on_event(event).status == "rejected"


@pytest.mark.parametrize(
    "other",
    [
        {"review": {"policy": "unserved"}, "validation": {"labels": [False, True]}},
        {"explain": {"enabled": True}},
    ],
)
def test_immediate_serving_refuses_review_and_explain(other: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"ordering\.serve immediate"):
        load_config(None, {"ordering": {"serve": "immediate"}, **other}, environ={})
    load_config(None, {"ordering": {"serve": "ordered"}, **other}, environ={})


def test_a_label_learnt_between_fetch_and_order_is_not_ignored() -> None:
    served, plain = core_for(**GATED), core_for(**GATED)
    first = Event(id="a", ts=1.0, features={"x": 1.0})
    later = Event(id="b", ts=3.0, features={"x": 2.0})
    for core in (served, plain):
        core.on_event(first)
    served.serve_at_once(later)  # fetched before the label that goes first in order
    stale = served.state.model.predict_proba_one({"x": 2.0})
    for core in (served, plain):
        core.on_label(Label(id="a", ts=2.0, label=True))
    for core in (served, plain):
        core.on_event(later)
    # In order, "b" is scored on the model that learnt "a": as if never served at once.
    kept = served.state.join.pending["b"].model
    assert kept == plain.state.join.pending["b"].model != stale
    assert learning_state(served) == learning_state(plain)
