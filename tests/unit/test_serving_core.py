"""A predictor with a model version serves exactly what the learner would have served."""

from __future__ import annotations

import itertools
import pickle
from typing import Any

import pytest
from river import datasets

from pipeline.config import RiverlineConfig, load_config
from pipeline.core import LearningCore
from pipeline.schemas import Event, Label
from pipeline.serving.predictor_core import ServingCore
from pipeline.serving.snapshot import snapshot_of

DELAY = 5  # a label arrives five events after its event: the learner serves in between


def config(**overrides: Any) -> RiverlineConfig:
    base: dict[str, Any] = {
        "name": "unit-serving",
        "fallback": {"default": False},
        "gating": {"min_labels": 20, "window": 30},
        "drift": {"detector": None},
    }
    return load_config(None, {**base, **overrides}, environ={})


def bananas(n: int) -> list[tuple[Event, Label]]:
    """Bananas' two features; its labels are booleans."""
    rows = itertools.islice(datasets.Bananas(), n)
    return [
        (
            Event(id=str(i), ts=float(i), features=dict(x)),
            Label(id=str(i), ts=float(i) + DELAY, label=y),
        )
        for i, (x, y) in enumerate(rows)
    ]


CASES = {
    "linear": {},
    "linear-explained": {"explain": {"enabled": True, "top_k": 2}},
    "tree": {"model": {"spec": "tree.HoeffdingTreeClassifier(grace_period=20)"}},
    "threshold": {"gating": {"min_labels": 20, "window": 30, "confidence_threshold": 0.55}},
}


@pytest.mark.parametrize("case", CASES)
def test_a_snapshot_serves_the_same_bytes_as_the_learner(case: str) -> None:
    cfg = config(**CASES[case])
    learner = LearningCore.from_config(cfg)
    predictor = ServingCore(cfg)  # swapped along the way, as a predictor's watcher does
    pairs = bananas(400)
    compared: list[tuple[str, str]] = []
    for i, (event, _) in enumerate(pairs):
        if i % 7 == 0:  # a new version every few events, and a fresh predictor on it
            snapshot = snapshot_of(learner, cfg, {("e", 0): i})
            predictor.swap(snapshot)
            fresh = ServingCore(cfg, snapshot)
            served = learner.on_event(event).prediction_json()
            got = fresh.on_event(event)
            assert served is not None and got.prediction is not None
            assert got.prediction_json() == served, (i, served)
            assert predictor.on_event(event).prediction_json() == served, (i, served)
            assert predictor.model_version == learner.model_version == snapshot.version
            compared.append((snapshot.mode, got.prediction.source))
        else:
            learner.on_event(event)
        if i >= DELAY:
            learner.on_label(pairs[i - DELAY][1])
    modes = {mode for mode, _ in compared}
    sources = {source for _, source in compared}
    # The comparison covered the untrained, shadow and serving learner, fallback and model.
    assert {"cold", "shadow", "serving"} <= modes, modes
    assert {"default", "model"} <= sources, sources


def test_a_snapshot_does_not_follow_the_learner() -> None:
    cfg = config()
    learner = LearningCore.from_config(cfg)
    pairs = bananas(300)
    for event, label in pairs[:200]:
        learner.on_event(event)
        learner.on_label(label)
    snapshot = snapshot_of(learner, cfg, {})
    probe = pairs[250][0]
    before = ServingCore(cfg, snapshot).on_event(probe).prediction_json()
    for event, label in pairs[200:250]:
        learner.on_event(event)
        learner.on_label(label)
    assert learner.model_version == snapshot.version + 50
    assert ServingCore(cfg, snapshot).on_event(probe).prediction_json() == before
    # A pickled and loaded snapshot (as a predictor gets it from Redis) serves the same too.
    loaded = pickle.loads(pickle.dumps(snapshot))
    assert ServingCore(cfg, loaded).on_event(probe).prediction_json() == before


def test_no_snapshot_serves_as_an_untrained_learner() -> None:
    cfg = config(
        fallback={
            "rules": [
                {"feature": "1", "op": ">", "value": 0.0, "prediction": True, "confidence": 0.9}
            ],
            "default": False,
        }
    )
    learner, predictor = LearningCore.from_config(cfg), ServingCore(cfg)
    for event, _ in bananas(50):
        assert predictor.on_event(event).prediction_json() == (
            learner.on_event(event).prediction_json()
        )
    assert predictor.model_version == 0
    assert set(predictor.served_by) == {"heuristic", "default"}


class Choking:
    """A classifier that cannot predict one vector: both cores must dead-letter it alike."""

    def predict_proba_one(self, x: dict[str, Any]) -> dict[Any, float]:
        if x.get("1", 0.0) > 0.5:
            raise ValueError("cannot")
        return {True: 0.9, False: 0.1}

    def learn_one(self, x: dict[str, Any], y: Any) -> None:
        pass


def test_model_errors_are_rejected_like_the_learner() -> None:
    cfg = config()
    learner = LearningCore.from_config(cfg)
    learner.state.model = Choking()
    learner.state.gating.mode = "serving"
    predictor = ServingCore(cfg, snapshot_of(learner, cfg, {}))
    rejected = 0
    for event, _ in bananas(100):
        expected, got = learner.on_event(event, origin="o"), predictor.on_event(event, origin="o")
        assert got.prediction_json() == expected.prediction_json()
        assert got.rejections == expected.rejections
        rejected += bool(got.rejections)
    assert rejected > 0 and predictor.dead_letters["model_error"] == rejected
    assert predictor.report()["dead_letters"] == {"model_error": rejected}


def test_a_version_with_another_fallback_or_pipeline_is_refused() -> None:
    cfg = config()
    predictor = ServingCore(cfg)
    other_rules = config(fallback={"default": True})
    with pytest.raises(ValueError, match="another fallback chain"):
        predictor.swap(snapshot_of(LearningCore.from_config(other_rules), other_rules, {}))
    other_name = config(name="elsewhere")
    with pytest.raises(ValueError, match="'elsewhere'"):
        predictor.swap(snapshot_of(LearningCore.from_config(other_name), other_name, {}))
    assert predictor.snapshot is None and predictor.model_version == 0


def test_a_predictor_explains_as_the_learner_does() -> None:
    cfg = config(
        # Quick to split (ties broken early): the path is what is compared.
        model={"spec": "tree.HoeffdingTreeClassifier(grace_period=20, delta=0.1, tau=0.5)"},
        explain={"enabled": True, "top_k": 2, "samples": 16, "background": 4},
    )
    learner = LearningCore.from_config(cfg)
    pairs = bananas(300)
    for event, label in pairs[:250]:
        learner.on_event(event)
        learner.on_label(label)
    snapshot = snapshot_of(learner, cfg, {})
    assert snapshot.explain is not None and snapshot.explain.samples == 16
    probes = [event for event, _ in pairs[250:]]
    served = [learner.on_event(p).prediction_json() for p in probes]
    assert all(b'"method":"tree"' in (s or b"") for s in served if b'"source":"model"' in s)
    assert any(b'"method":"tree"' in (s or b"") for s in served)
    # The tree's explanation depends on the model alone: a predictor's is byte for byte the same.
    predictor = ServingCore(cfg, pickle.loads(pickle.dumps(snapshot)))
    assert [predictor.on_event(p).prediction_json() for p in probes] == served
