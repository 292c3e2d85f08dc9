"""Split mode: the learner scores what was published, whatever order predictions arrive in."""

from __future__ import annotations

import pickle
from typing import Any

import orjson
import pytest

from pipeline.config import load_config
from pipeline.core import LearningCore
from pipeline.schemas import Event, Label
from pipeline.served import UNPUBLISHED, parse_published
from producers.schedule import parse_delay, schedule
from producers.sources import open_source

OVERRIDES: dict[str, Any] = {
    "model": {"spec": "preprocessing.StandardScaler | linear_model.LogisticRegression"},
    "evaluation": {"metric": "ROCAUC", "extra_metrics": ["Accuracy", "LogLoss"]},
    "fallback": {"default": False},
    "gating": {"min_labels": 50, "window": 100},
}


def make_core(split: bool) -> LearningCore:
    core = LearningCore.from_config(load_config(None, {"name": "split", **OVERRIDES}, environ={}))
    if split:
        core.enable_published_scoring(max_waiting=10_000)
    return core


def stream(limit: int = 1500) -> list[Any]:
    out = []
    for emission in schedule(open_source("river:Phishing"), parse_delay("30")):
        record = emission.record
        if emission.kind == "event":
            out.append(Event(id=record.id, ts=emission.ts, features=record.features))
        else:
            out.append(Label(id=record.id, ts=emission.ts, label=record.label))  # type: ignore[arg-type]
        if len(out) >= limit:
            break
    return out


@pytest.mark.parametrize("when", ["right_after_event", "before_event", "after_label", "mixed"])
def test_served_scores_equal_run_mode_in_any_order(when: str) -> None:
    run, learner = make_core(split=False), make_core(split=True)
    late: dict[str, bytes] = {}  # predictions held back until after their label
    for n, record in enumerate(stream()):
        if isinstance(record, Event):
            payload = run.on_event(record).prediction_json()
            assert payload is not None
            if when == "before_event":  # the predictions partition was fetched first
                learner.on_prediction(parse_published(payload))
                learner.on_event(record)
                continue
            learner.on_event(record)
            hold = when == "after_label" or (when == "mixed" and n % 3 == 0)
            if hold:
                late[record.id] = payload
            else:
                learner.on_prediction(parse_published(payload))
        else:
            run.on_label(record)
            learner.on_label(record)
            if record.id in late:
                learner.on_prediction(parse_published(late.pop(record.id)))
    for payload in late.values():  # events whose labels are still to come
        learner.on_prediction(parse_published(payload))
    # The model and fallback are scored as in run; served from what was published.
    assert learner.state.evaluator.values() == run.state.evaluator.values()
    assert learner.state.labels == run.state.labels
    assert pickle.dumps(learner.state.model) == pickle.dumps(run.state.model)
    served = learner.state.served_join
    assert served is not None
    assert served.scored == run.state.labels
    assert served.report()["unscored_no_prediction"] == 0
    assert served.by_source == run.state.served_by
    assert sum(served.by_source.values()) == run.state.events


def test_missing_and_duplicate_predictions_are_counted_not_scored() -> None:
    learner = make_core(split=True)
    records = stream(400)
    published = 0
    for record in records:
        if isinstance(record, Event):
            learner.on_event(record)
            n = int(record.id) if record.id.isdigit() else hash(record.id)
            if n % 2 == 0:  # every other prediction was lost
                body = {"id": record.id, "ts": record.ts, "prediction": True, "source": "default"}
                learner.on_prediction(parse_published(orjson.dumps(body)))
                learner.on_prediction(parse_published(orjson.dumps(body)))  # and re-sent
                published += 1
        else:
            learner.on_label(record)
    served = learner.state.served_join
    assert served is not None
    report = served.report()
    labels = learner.state.labels
    assert report["scored"] + report["unscored_no_prediction"] == labels
    assert 0 < report["scored"] < labels
    assert report["ignored"] == published  # the re-sent copies
    # Never scored: still waiting, not passed off as fallback or model answers.
    unpublished = [p for p in learner.state.join.pending.values() if p.served is UNPUBLISHED]
    assert unpublished and all(int(p.id) % 2 for p in unpublished)
    assert learner.report()["served_from_predictions"]["scored"] == report["scored"]


def test_split_state_survives_a_checkpoint_round_trip() -> None:
    learner = make_core(split=True)
    for record in stream(200):
        if isinstance(record, Event):
            learner.on_event(record)
        else:
            learner.on_label(record)
    state = pickle.loads(pickle.dumps(learner.state))
    assert all(p.served is UNPUBLISHED for p in state.join.pending.values())
    assert state.served_join is not None
    assert len(state.served_join.waiting) == len(learner.state.served_join.waiting)  # type: ignore[union-attr]


@pytest.mark.parametrize("when", ["before_event", "after_event", "after_label"])
def test_the_first_published_copy_is_scored_whatever_the_order(when: str) -> None:
    """A predictor SIGKILLed before committing serves some events again, maybe with a newer
    model: two copies of one id that differ. The learner scores the first copy (the one read
    first from the event's partition, the one a consumer acted on), in every arrival order; the
    docs (tutorials/compose.md, Delivery) tell downstream to keep the first copy per id too."""
    learner = make_core(split=True)
    event = Event(id="e1", ts=1.0, features={"x": 1.0})

    def copy(prediction: bool, version: int) -> Any:
        body = {"id": "e1", "ts": 1.0, "prediction": prediction, "source": "default"}
        return parse_published(orjson.dumps({**body, "model_version": version}))

    first, second = copy(True, 1), copy(False, 2)
    if when == "before_event":  # the predictions partition was fetched first
        learner.on_prediction(first)
        learner.on_prediction(second)
        learner.on_event(event)
        learner.on_label(Label(id="e1", ts=2.0, label=True))
    elif when == "after_event":
        learner.on_event(event)
        learner.on_prediction(first)
        learner.on_prediction(second)
        learner.on_label(Label(id="e1", ts=2.0, label=True))
    else:
        learner.on_event(event)
        learner.on_label(Label(id="e1", ts=2.0, label=True))
        learner.on_prediction(first)
        learner.on_prediction(second)
    report = learner.report()
    served = report["served_from_predictions"]
    assert served["scored"] == 1 and served["ignored"] == 1, served
    assert served["newest_model_version"] == 1
    assert report["metrics"]["served"]["Accuracy"] == 1.0  # the first copy's True, not False
