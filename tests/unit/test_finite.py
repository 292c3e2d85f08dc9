"""Valid but huge numbers (issue 18 point 2): refused at the edge, and a model that turns
non-finite anyway is rolled back to its last good state."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from pipeline.config import ConfigError, ValidationConfig, load_config
from pipeline.core import LearningCore
from pipeline.schemas import Event, InvalidRecord, Label
from pipeline.validation import Validator
from producers.schedule import parse_delay, schedule
from producers.sources import open_source

NOW = 1_700_000_000.0
POISON = {"100": 1e308, "300": -1e308}  # event id -> every feature of that event


def raw_event(features: dict[str, Any], **fields: Any) -> bytes:
    return json.dumps({"id": "e", "ts": NOW, "features": features, **fields}).encode()


@pytest.mark.parametrize(
    "value",
    # Beyond 2**63 (the parser's slow path) and below it (its fast path); ints as well.
    [1e308, -1e308, 1.5e12, -2e13, 10**13, -(10**13), 10**30, 12345678901234567890],
)
def test_a_feature_beyond_max_abs_value_is_dead_lettered_naming_it(value: float) -> None:
    validator = Validator(ValidationConfig(), regression=False, clock=lambda: NOW)
    with pytest.raises(InvalidRecord) as caught:
        validator.event(raw_event({"ok": 1.0, "amount": value}))
    assert caught.value.reason == "value_out_of_range"
    assert "features.amount" in str(caught.value)
    assert "validation.max_abs_value" in str(caught.value)


@pytest.mark.parametrize("value", [1e12, -1e12, 10**12, 0.5, -3, 1e-300, True])
def test_values_within_max_abs_value_pass(value: float) -> None:
    validator = Validator(ValidationConfig(), regression=False, clock=lambda: NOW)
    assert validator.event(raw_event({"x": value})).features == {"x": value}


def test_attributes_are_not_features_and_the_limit_can_be_lifted() -> None:
    strict = Validator(ValidationConfig(), regression=False, clock=lambda: NOW)
    assert strict.event(raw_event({"x": 1.0}, attributes={"big": 1e308})).attributes == {
        "big": 1e308
    }
    lifted = Validator(ValidationConfig(max_abs_value=None), regression=False, clock=lambda: NOW)
    assert lifted.event(raw_event({"x": 1e308})).features == {"x": 1e308}
    small = Validator(ValidationConfig(max_abs_value=10), regression=False, clock=lambda: NOW)
    with pytest.raises(InvalidRecord, match=r"features\.x"):
        small.event(raw_event({"x": 10.5}))


def test_a_regressor_label_beyond_max_abs_value_is_dead_lettered() -> None:
    validator = Validator(ValidationConfig(), regression=True, clock=lambda: NOW)
    for value in (1e308, -1e13, 10**20):
        with pytest.raises(InvalidRecord) as caught:
            validator.label(json.dumps({"id": "e", "ts": NOW, "label": value}).encode())
        assert caught.value.reason == "value_out_of_range", value
        assert "validation.max_abs_value" in str(caught.value)
    assert validator.label(b'{"id": "e", "ts": 1700000000, "label": 2.5}').label == 2.5


def test_max_abs_value_must_be_positive() -> None:
    assert ValidationConfig().max_abs_value == 1e12
    with pytest.raises(ConfigError, match=r"validation\.max_abs_value"):
        load_config(None, {"validation": {"max_abs_value": 0}}, environ={})


def run_phishing(poison: dict[str, float], drop_labels: frozenset[str] = frozenset()) -> Any:
    """The core (no validation in front of it) on Phishing, some events' features replaced."""
    cfg = load_config(
        None,
        {
            "name": "finite",
            "model": {"spec": "preprocessing.StandardScaler | linear_model.LogisticRegression"},
            "evaluation": {"metric": "Accuracy", "extra_metrics": ["LogLoss"]},
            "fallback": {"default": False},
        },
        environ={},
    )
    core = LearningCore.from_config(cfg)
    rejections = []
    for emission in schedule(open_source("river:Phishing"), parse_delay("50")):
        record = emission.record
        if emission.kind == "event":
            x = dict(record.features)
            if record.id in poison:
                x = {name: poison[record.id] for name in x}
            event = Event(id=record.id, ts=emission.ts, features=x)
            outcome = core.on_event(event, origin=f"event {record.id}")
        elif record.id not in drop_labels:
            label = Label(id=record.id, ts=emission.ts, label=record.label)  # type: ignore[arg-type]
            outcome = core.on_label(label, origin=f"label {record.id}")
        rejections += outcome.rejections
    return core, rejections


def test_a_model_turned_non_finite_is_rolled_back_and_scores_as_without_the_records() -> None:
    clean, _ = run_phishing({})
    poisoned, rejections = run_phishing(POISON)
    expected = clean.report()["metrics"]["model"]
    got = poisoned.report()["metrics"]["model"]
    assert all(math.isfinite(v) for v in got.values()), got
    for name in ("Accuracy", "LogLoss"):
        assert abs(got[name] - expected[name]) <= 0.01, (name, got, expected)
    report = poisoned.report()
    assert report["model_rollbacks"] == 2
    assert report["dead_letters"] == {"model_non_finite": 2}
    # The record that caused it: the event whose features broke the model.
    assert [(r.reason, r.origin) for r in rejections] == [
        ("model_non_finite", "event 100"),
        ("model_non_finite", "event 300"),
    ]
    assert "not finite" in rejections[0].message and "'100'" in rejections[0].message
    # Rolled back exactly: the model equals one that never learned from those two events.
    reference, _ = run_phishing(POISON, drop_labels=frozenset(POISON))
    model, other = poisoned.state.model, reference.state.model
    assert model["LogisticRegression"].weights == other["LogisticRegression"].weights
    assert model["StandardScaler"].vars == other["StandardScaler"].vars
    assert poisoned.model_version == reference.model_version == clean.model_version - 2


@pytest.mark.parametrize(
    ("spec", "extra", "label"),
    [
        ("linear_model.LogisticRegression", {}, lambda i: i % 2 == 0),
        # A NaN regression was served as {"prediction": null, "source": "model"} by predictors.
        ("linear_model.LinearRegression", {"evaluation": {"metric": "MAE"}}, float),
    ],
)
def test_a_non_finite_prediction_is_no_opinion_for_the_learner_and_a_predictor(
    spec: str, extra: dict[str, Any], label: Any
) -> None:
    from pipeline.serving.predictor_core import ServingCore
    from pipeline.serving.snapshot import snapshot_of

    cfg = load_config(
        None,
        {
            "name": "finite-serving",
            "model": {"spec": f"preprocessing.StandardScaler | {spec}"},
            "fallback": {"default": 0.0 if extra else False},
            "gating": {"min_labels": 1, "window": 10},
            "drift": {"detector": None},
            **extra,
        },
        environ={},
    )
    # The guard off (as before it existed): the model's state turns NaN and stays so.
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"rollback_every": None})})
    learner = LearningCore.from_config(cfg)
    for i, value in enumerate([1.0, 2.0, 1e308, -1e308, 3.0]):
        learner.on_event(Event(id=str(i), ts=float(i), features={"x": value}))
        learner.on_label(Label(id=str(i), ts=float(i), label=label(i)))
    assert learner.state.model_rollbacks == 0
    learner.state.gating.mode = "serving"  # as if promoted before it broke: the model serves
    probe = Event(id="probe", ts=10.0, features={"x": 1.0})
    predictor = ServingCore(cfg, snapshot_of(learner, cfg, {}))
    for served in (learner.on_event(probe), predictor.on_event(probe)):
        fields = json.loads(served.prediction_json() or b"{}")
        assert fields["source"] == "default", fields  # the model had no opinion
        assert fields["prediction"] is not None and fields["proba"] is None, fields
