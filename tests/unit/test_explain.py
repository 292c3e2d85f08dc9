"""Explanations for every model kind (issue 20): trees (path, Saabas), forests and bagging
(members weighted as they vote), anything else (sampled Shapley values, seeded)."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import datasets, ensemble, forest, naive_bayes, neighbors, preprocessing, tree

from pipeline.explain import (
    Explainer,
    ExplainSettings,
    explain,
    sampled_contributions,
    tree_contributions,
)

PHISHING = list(itertools.islice(datasets.Phishing(), 400))
TRUMP = list(datasets.TrumpApproval())


def _trained(model, data):
    for x, y in data:
        model.learn_one(x, y)
    return model


def _served(model, x, classifier):
    """What the server explains: the served class and its probability, or the value."""
    if classifier:
        proba = model.predict_proba_one(x)
        target = max(proba, key=proba.get)
        return target, proba[target]
    return None, model.predict_one(x)


def _explained(model, x, classifier, background=(), **settings):
    target, value = _served(model, x, classifier)
    found = explain(
        model,
        x,
        target,
        value,
        classifier,
        ExplainSettings(top_k=100, **settings),
        list(background),
        random.Random(0),
    )
    return found, value


TREES = [
    (lambda: tree.HoeffdingTreeClassifier(grace_period=50, delta=1e-3), PHISHING, True),
    (
        lambda: tree.HoeffdingAdaptiveTreeClassifier(grace_period=50, delta=1e-3, seed=1),
        PHISHING,
        True,
    ),
    (lambda: tree.ExtremelyFastDecisionTreeClassifier(grace_period=50, delta=1e-3), PHISHING, True),
    (lambda: tree.HoeffdingTreeRegressor(grace_period=50, delta=1e-3), TRUMP, False),
    (
        lambda: tree.HoeffdingAdaptiveTreeRegressor(grace_period=50, delta=1e-3, seed=1),
        TRUMP,
        False,
    ),
]


@pytest.mark.parametrize(("make", "data", "classifier"), TREES)
def test_tree_contributions_add_up_to_prediction_minus_root(make, data, classifier):
    model = _trained(make(), data)
    assert model.height > 1, "the tree must have split for the test to mean anything"
    for x, _ in data[:50]:
        found, value = _explained(model, x, classifier)
        summary = found[-1]
        assert summary["method"] == "tree"
        total = sum(e["contribution"] for e in found[:-1])
        assert total == pytest.approx(value - summary["base"], abs=1e-9)
        assert summary["prediction"] == pytest.approx(value)
        # Every feature named is the event's own, and a split's feature on its path.
        on_path = {step["feature"] for step in summary["path"]}
        assert {e["feature"] for e in found[:-1]} <= on_path <= set(x)
        assert summary["leaf"]


@pytest.mark.parametrize(("make", "data", "classifier"), TREES)
def test_tree_path_is_the_one_river_debug_one_prints(make, data, classifier):
    model = _trained(make(), data)
    for x, _ in data[:50]:
        target, value = _served(model, x, classifier)
        _, _, path, _ = tree_contributions(model, x, target, value, classifier)
        printed = model.debug_one(x).splitlines()
        # debug_one prints each split's test, then the leaf (its repr, over several lines).
        leaf = model._root.traverse(x)
        leaf = leaf[0] if isinstance(leaf, list) else leaf  # the adaptive trees' option leaves
        leaf_lines = repr(leaf).splitlines()
        assert [step["test"] for step in path] + leaf_lines == printed


def test_tree_without_split_is_sampled_instead():
    model = _trained(tree.HoeffdingTreeClassifier(), PHISHING[:20])
    x = PHISHING[30][0]
    found, _ = _explained(model, x, True, background=[x for x, _ in PHISHING[:32]])
    assert found[-1]["method"] == "sampled"


ENSEMBLES = [
    (lambda: forest.ARFClassifier(n_models=5, seed=1), PHISHING, True),
    (lambda: forest.ARFClassifier(n_models=3, seed=1, disable_weighted_vote=True), PHISHING, True),
    (
        lambda: ensemble.BaggingClassifier(
            tree.HoeffdingTreeClassifier(grace_period=50, delta=1e-3), n_models=3, seed=1
        ),
        PHISHING,
        True,
    ),
    (
        lambda: ensemble.ADWINBaggingClassifier(
            tree.HoeffdingTreeClassifier(grace_period=50, delta=1e-3), n_models=3, seed=1
        ),
        PHISHING,
        True,
    ),
    (lambda: forest.ARFRegressor(n_models=3, seed=1, aggregation_method="mean"), TRUMP, False),
    (
        lambda: forest.ARFRegressor(
            n_models=3, seed=1, aggregation_method="mean", disable_weighted_vote=False
        ),
        TRUMP,
        False,
    ),
    (
        lambda: ensemble.BaggingRegressor(
            tree.HoeffdingTreeRegressor(grace_period=50, delta=1e-3), n_models=3, seed=1
        ),
        TRUMP,
        False,
    ),
]


@pytest.mark.parametrize(("make", "data", "classifier"), ENSEMBLES)
def test_ensemble_contributions_are_the_members_weighted_as_they_vote(make, data, classifier):
    model = _trained(make(), data)
    methods = set()
    for x, _ in data[:40]:
        found, value = _explained(model, x, classifier)
        summary = found[-1]
        methods.add(summary["method"])
        total = sum(e["contribution"] for e in found[:-1])
        assert total == pytest.approx(value - summary["base"], abs=1e-9)
        assert {e["feature"] for e in found[:-1]} <= set(x)
    assert methods == {"ensemble"}


def test_a_median_forest_is_sampled_instead():
    model = _trained(forest.ARFRegressor(n_models=3, seed=1, aggregation_method="median"), TRUMP)
    x = TRUMP[5][0]
    found, value = _explained(model, x, False, background=[x for x, _ in TRUMP[:16]])
    assert found[-1]["method"] == "sampled"
    assert sum(e["contribution"] for e in found[:-1]) == pytest.approx(
        value - found[-1]["base"], abs=1e-9
    )


OTHERS = [
    (lambda: preprocessing.StandardScaler() | neighbors.KNNClassifier(), PHISHING, True),
    (lambda: naive_bayes.GaussianNB(), PHISHING, True),
    (lambda: preprocessing.StandardScaler() | neighbors.KNNRegressor(), TRUMP, False),
]


@pytest.mark.parametrize(("make", "data", "classifier"), OTHERS)
@pytest.mark.parametrize("samples", [8, 64, 400])
def test_sampled_contributions_add_up_to_prediction_minus_background_mean(
    make, data, classifier, samples
):
    model = _trained(make(), data[:200])
    background = [x for x, _ in data[200:216]]
    for x, _ in data[300:310]:
        target, value = _served(model, x, classifier)
        found, _ = _explained(model, x, classifier, background=background, samples=samples)
        summary = found[-1]
        assert summary["method"] == "sampled"
        total = sum(e["contribution"] for e in found[:-1])
        assert total == pytest.approx(value - summary["base"], abs=1e-9)
        assert {e["feature"] for e in found[:-1]} <= set(x)
    # With as many permutations as background events, the base is the background's mean.
    if samples // len(x) >= len(background):
        predict = (
            (lambda z: model.predict_proba_one(z).get(target, 0.0))
            if classifier
            else model.predict_one
        )
        mean = sum(predict(z) for z in background) / len(background)
        assert summary["base"] == pytest.approx(mean, abs=1e-12)


def test_sampled_cost_is_fixed_by_samples():
    model = _trained(naive_bayes.GaussianNB(), PHISHING[:100])
    calls = 0
    predict_proba_one = model.predict_proba_one

    def counted(x):
        nonlocal calls
        calls += 1
        return predict_proba_one(x)

    model.predict_proba_one = counted
    x = PHISHING[150][0]
    for samples in (16, 64, 256):
        calls = 0
        _explained(model, x, True, background=[x for x, _ in PHISHING[:32]], samples=samples)
        assert calls <= samples + 2  # + the served answer's and the event's own


def test_explainer_is_seeded_by_the_event_so_a_replay_gives_the_same_answers():
    def run():
        model = preprocessing.StandardScaler() | neighbors.KNNClassifier()
        explainer = Explainer(ExplainSettings(samples=32, background=8, every=2), True)
        out = []
        for i, (x, y) in enumerate(PHISHING[:120]):
            explainer.observe(x)
            if i >= 20:
                target, value = _served(model, x, True)
                out.append(explainer.explain(model, x, str(i), target, value))
            model.learn_one(x, y)
        return out, explainer

    first, explainer = run()
    second, _ = run()
    assert first == second
    assert explainer.explained == 50  # one in every 2 of the 100 served
    assert sum(e is not None for e in first) == 50
    assert explainer.seconds > 0


def test_an_unexplainable_model_still_serves():
    class Odd:
        def predict_proba_one(self, x):
            raise RuntimeError("no")

    explainer = Explainer(ExplainSettings(), True)
    explainer.observe({"a": 1.0})
    assert explainer.explain(Odd(), {"a": 1.0}, "1", True, 0.9) is None


@settings(max_examples=60, deadline=None)
@given(
    x=st.dictionaries(
        st.sampled_from("abcdef"), st.floats(-10, 10, allow_nan=False), min_size=1, max_size=6
    ),
    background=st.lists(
        st.dictionaries(st.sampled_from("abcdefg"), st.floats(-10, 10, allow_nan=False)),
        min_size=1,
        max_size=10,
    ),
    samples=st.integers(1, 200),
    seed=st.integers(0, 2**32),
)
def test_sampled_attribution_adds_up_and_repeats_for_any_model(x, background, samples, seed):
    # A model with interactions and missing values: what matters is the telescoping.
    def predict(z):
        return z.get("a", 0.5) * z.get("b", -1.0) + max(z.get("c", 0.0), z.get("d", 0.0)) ** 2

    first = sampled_contributions(predict, x, background, samples, random.Random(seed))
    again = sampled_contributions(predict, x, background, samples, random.Random(seed))
    assert first == again
    assert first is not None
    base, found = first
    assert set(found) == set(x)
    assert sum(found.values()) == pytest.approx(predict(x) - base, abs=1e-6)


@pytest.mark.parametrize("every", [1, 3])
def test_a_restored_core_explains_as_an_uninterrupted_one(every):
    """The sampled explainer's background and its one-in-every count are in the core's state:
    a core restored from a pickled state (a checkpoint) halfway through explains every later
    served prediction exactly as the core that never stopped."""
    import pickle

    from pipeline.config import load_config
    from pipeline.core import LearningCore
    from pipeline.schemas import Event, Label

    cfg = load_config(
        None,
        {
            "name": "unit-explain-restart",
            "model": {"spec": "preprocessing.StandardScaler | neighbors.KNNClassifier"},
            "evaluation": {"metric": "Accuracy"},
            "fallback": {"default": False},
            "gating": {"min_labels": 20, "window": 20},
            "explain": {"enabled": True, "samples": 32, "background": 8, "every": every},
        },
        environ={},
    )
    records = [(str(i), x, y) for i, (x, y) in enumerate(PHISHING[:160])]

    def feed(core, part):
        served = []
        for i, x, y in part:
            outcome = core.on_event(Event(id=i, ts=float(i), features=x))
            served.append(outcome.prediction_json())
            core.on_label(Label(id=i, ts=float(i), label=y))
        return served

    whole = LearningCore.from_config(cfg)
    uninterrupted = feed(whole, records)
    first = LearningCore.from_config(cfg)
    before = feed(first, records[:80])
    restored = LearningCore.from_config(cfg, pickle.loads(pickle.dumps(first.state)))
    after = feed(restored, records[80:])
    assert before + after == uninterrupted
    sampled = [p for p in after if b'"method":"sampled"' in p]
    assert len(sampled) >= 10  # the model served and was explained after the restart
    # A state from before the memory existed (or with explanations off) starts one afresh.
    state = pickle.loads(pickle.dumps(first.state))
    state.explain_memory = None
    fresh = LearningCore.from_config(cfg, state)
    assert fresh.state.explain_memory is not None
    assert len(fresh.state.explain_memory.background) == 0
    assert feed(fresh, records[80:]) != after
