"""The nearest labelled events a review request carries (pipeline/neighbours.py): exact
distances, bounds, ties, and the core's requests."""

from __future__ import annotations

import pickle

import pytest

from pipeline.config import load_config
from pipeline.core import LearningCore
from pipeline.neighbours import LabelledEvents, gaps
from pipeline.schemas import Event, Label


def test_distance_is_the_mean_gap_scaled_by_range_equal_or_not_and_missing() -> None:
    kept = LabelledEvents(kept=10)
    kept.add("low", {"n": 0.0, "c": "a", "b": True}, 0)
    kept.add("high", {"n": 8.0, "c": "b"}, 1)  # no "b": missing counts 1
    found = kept.nearest({"n": 2.0, "c": "a", "b": True}, 5)
    # Range of n among the kept: 8. low: (2/8 + 0 + 0) / 3; high: (6/8 + 1 + 1) / 3.
    assert [(f["id"], f["label"], f["distance"]) for f in found] == [
        ("low", 0, round((0.25 + 0 + 0) / 3, 6)),
        ("high", 1, round((0.75 + 1 + 1) / 3, 6)),
    ]
    assert found[0]["differs"] == {"n": 0.0}
    assert found[1]["differs"] == {"c": "b", "b": None, "n": 8.0}  # largest gap first
    # A gap is capped at 1 (a value beyond the kept range); a feature that never varies: 0 or 1.
    assert gaps({"n": 100.0}, {"n": 0.0}, {"n": 8.0}) == {"n": 1.0}
    assert gaps({"n": 3.0, "m": 1}, {"n": 3.0, "m": 2}, {}) == {"n": 0.0, "m": 1.0}
    assert gaps({"flag": True}, {"flag": 1}, {}) == {"flag": 1.0}  # a bool is no number


def test_bounded_ties_newest_first_and_k() -> None:
    kept = LabelledEvents(kept=3)
    for i in range(5):
        kept.add(str(i), {"x": 1.0}, i)
    assert [e[0] for e in kept.events] == ["2", "3", "4"]  # the last 3 only
    assert [f["id"] for f in kept.nearest({"x": 1.0}, 2)] == ["4", "3"]  # all at 0: newest
    assert len(kept.nearest({"x": 1.0}, 10)) == 3
    assert kept.nearest({"x": 1.0}, 0) == [] and LabelledEvents().nearest({"x": 1.0}, 3) == []
    assert pickle.loads(pickle.dumps(kept)).events.maxlen == 3


def _core(**review: object) -> LearningCore:
    cfg = load_config(
        None,
        {
            "name": "unit-neighbours",
            "model": {"spec": "linear_model.LogisticRegression"},
            "fallback": {"default": False},
            "review": {"policy": "unserved", **review},
        },
        environ={},
    )
    return LearningCore.from_config(cfg)


def test_a_review_request_carries_the_nearest_labelled_events() -> None:
    core = _core(neighbours=2)
    for i, (v, y) in enumerate([(0.0, False), (10.0, True), (9.0, True), (1.0, False)]):
        core.on_event(Event(id=f"e{i}", ts=float(i), features={"v": v}))
        core.on_label(Label(id=f"e{i}", ts=float(i), label=y))
    outcome = core.on_event(Event(id="new", ts=9.0, features={"v": 9.5}))
    request = outcome.review[0].record
    assert [(n.id, n.label, n.distance) for n in request.neighbours] == [
        ("e2", True, 0.05),
        ("e1", True, 0.05),
    ]
    # Checkpointed with the state; a config without them drops them.
    state = pickle.loads(pickle.dumps(core.state))
    again = LearningCore.from_config(core_config(neighbours=2), state)
    assert again.state.review is not None and again.state.review.neighbours is not None
    assert len(again.state.review.neighbours.events) == 4
    off = LearningCore.from_config(core_config(neighbours=0), pickle.loads(pickle.dumps(state)))
    assert off.state.review is not None and off.state.review.neighbours is None
    request = off.on_event(Event(id="new2", ts=9.0, features={"v": 9.5})).review[0].record
    assert request.neighbours == []


def core_config(**review: object) -> object:
    return load_config(
        None,
        {
            "name": "unit-neighbours",
            "model": {"spec": "linear_model.LogisticRegression"},
            "fallback": {"default": False},
            "review": {"policy": "unserved", **review},
        },
        environ={},
    )


@pytest.mark.parametrize("policy", ["none"])
def test_no_review_policy_keeps_nothing(policy: str) -> None:
    core = _core(policy=policy)
    core.on_event(Event(id="e", ts=0.0, features={"v": 1.0}))
    core.on_label(Label(id="e", ts=0.0, label=True))
    assert core.state.review is not None and core.state.review.neighbours is None
