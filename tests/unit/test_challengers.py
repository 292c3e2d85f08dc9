"""Challengers in the learning core: they learn and are scored beside the champion, never
served until promoted; the state (and so a checkpoint) carries them."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from river import datasets, evaluate

from pipeline.config import ConfigError, load_config
from pipeline.core import LearningCore
from pipeline.models import make_metric, parse_model_spec
from pipeline.schemas import Event, Label
from producers.schedule import parse_delay, schedule
from producers.sources import SourceOptions, open_source

LOGREG = "preprocessing.StandardScaler | linear_model.LogisticRegression"
TREE = "tree.HoeffdingTreeClassifier(grace_period=50)"


def config_for(**overrides: Any) -> Any:
    base = {"name": "unit-challengers", "evaluation": {"metric": "Accuracy"}}
    return load_config(None, {**base, **overrides}, environ={})


def records(limit: int | None = None) -> list[Any]:
    return list(
        schedule(open_source("river:Phishing", SourceOptions(limit=limit)), parse_delay("10"))
    )


def feed(core: LearningCore, emissions: list[Any]) -> list[Any]:
    decisions = []
    for kind, record, ts, _ in emissions:
        if kind == "event":
            outcome = core.on_event(Event(id=record.id, ts=ts, features=record.features))
        else:
            outcome = core.on_label(Label(id=record.id, ts=ts, label=record.label))  # type: ignore[arg-type]
        decisions += outcome.decisions
    return decisions


def test_champion_unchanged_and_challenger_scored_as_river() -> None:
    plain = LearningCore.from_config(config_for(model={"spec": LOGREG}))
    feed(plain, records())
    cfg = config_for(model={"spec": LOGREG, "challengers": [{"name": "tree", "spec": TREE}]})
    core = LearningCore.from_config(cfg)
    feed(core, records())
    report = core.report()
    board = report.pop("challengers")
    assert report == plain.report()  # never served, and the champion learns as before
    assert board["promotions"] == []
    tree = next(row for row in board["leaderboard"] if row["name"] == "tree")
    expected = evaluate.progressive_val_score(
        datasets.Phishing(), parse_model_spec(TREE), make_metric("Accuracy"), delay=10
    )
    assert tree["metric"] == expected.get() and tree["role"] == "challenger"
    assert board["leaderboard"][0]["name"] == "model"


def test_auto_promotion_serves_the_challenger_and_keeps_the_old_champion() -> None:
    cfg = config_for(
        model={
            "spec": "dummy.NoChangeClassifier",
            "challengers": [{"name": "logreg", "spec": LOGREG}],
        },
        challengers={"promote": "auto"},
        gating={"min_labels": 50, "window": 100, "margin": 0.05},
    )
    core = LearningCore.from_config(cfg)
    decisions = feed(core, records(400))
    promoted = [d for d in decisions if "challenger 'logreg'" in d.reason]
    assert len(promoted) == 1 and promoted[0].model_metric > promoted[0].fallback_metric + 0.05
    board = core.report()["challengers"]
    assert [(r["name"], r["role"]) for r in board["leaderboard"]] == [
        ("logreg", "champion"),
        ("model", "challenger"),
    ]
    assert type(core.state.model).__name__ == "Pipeline"  # the logistic regression serves
    assert board["promotions"][0]["label_index"] == promoted[0].label_index


def test_state_carries_challengers_across_a_checkpoint() -> None:
    cfg = config_for(
        model={
            "spec": "dummy.NoChangeClassifier",
            "challengers": [{"name": "logreg", "spec": LOGREG}],
        },
        challengers={"promote": "auto"},
        gating={"min_labels": 50, "window": 100, "margin": 0.05},
    )
    emissions = records(600)
    whole = LearningCore.from_config(cfg)
    feed(whole, emissions)
    first = LearningCore.from_config(cfg)
    feed(first, emissions[:301])
    resumed = LearningCore.from_config(cfg, pickle.loads(pickle.dumps(first.state)))
    feed(resumed, emissions[301:])
    assert resumed.report() == whole.report()


def test_manual_promotion_by_name() -> None:
    cfg = config_for(model={"spec": LOGREG, "challengers": [{"name": "tree", "spec": TREE}]})
    core = LearningCore.from_config(cfg)
    feed(core, records(200))
    tree_model = core.state.challengers.members[0].model  # type: ignore[union-attr]
    decision = core.promote_challenger("tree")
    assert "(by hand)" in decision.reason and core.state.model is tree_model
    with pytest.raises(KeyError, match="'model'"):  # the old champion is a challenger now
        core.promote_challenger("forest")


def test_a_promotion_by_hand_is_a_model_version_of_its_own() -> None:
    """Made between labels, it still gets a new version number (a learner publishes it at
    once: the version of the labels learned may be out already); the summary's count of
    labels learned is not changed by it."""
    from pipeline.cli.summary import labels_line

    cfg = config_for(model={"spec": LOGREG, "challengers": [{"name": "tree", "spec": TREE}]})
    core = LearningCore.from_config(cfg)
    feed(core, records(200))
    before = core.model_version
    assert before == core.state.labels
    core.promote_challenger("tree")
    assert core.model_version == before + 1
    report = core.report()
    assert report["model_version"] == before + 1
    assert [p["by_hand"] for p in report["challengers"]["promotions"]] == [True]
    assert f"{core.state.labels}[/bold] learned" in labels_line(report)
    assert "raised" not in labels_line(report)
    core.promote_challenger("model")  # and back: another new version
    assert core.model_version == before + 2


def test_challenger_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"model\.challengers"):
        config_for(
            model={"challengers": [{"name": "a", "spec": TREE}, {"name": "a", "spec": TREE}]}
        )
    with pytest.raises(ConfigError, match=r"model\.challengers"):
        LearningCore.from_config(
            config_for(
                model={"challengers": [{"name": "r", "spec": "linear_model.LinearRegression"}]}
            )
        )


def test_leaderboard_in_the_status_and_prometheus() -> None:
    from consumers.status import StatusBoard
    from pipeline.telemetry import PipelineMetrics

    cfg = config_for(model={"spec": LOGREG, "challengers": [{"name": "tree", "spec": TREE}]})
    core = LearningCore.from_config(cfg)
    feed(core, records(200))
    metrics = PipelineMetrics()
    status = StatusBoard(metrics, None, "unused", 2.0).learning_gauges(core, True)
    assert [(e["name"], e["role"]) for e in status["challengers"]] == [
        ("model", "champion"),
        ("tree", "challenger"),
    ]
    sample = metrics.registry.get_sample_value(
        "riverline_challenger_metric", {"name": "tree", "role": "challenger", "window": "run"}
    )
    assert sample == status["challengers"][1]["metric"]


def test_challengers_learn_the_corrections_too() -> None:
    """Ground truth correcting a person's wrong answer teaches the champion again: and them."""
    from pipeline.compare import simulate
    from producers.reviewer import SimulatedAnswers, parse_reviewer, true_labels
    from producers.schedule import LabelDelay

    cfg = config_for(
        model={"spec": LOGREG, "challengers": [{"name": "tree", "spec": TREE}]},
        review={"policy": "uncertain", "confidence_below": 0.9, "budget_per_minute": None},
        # People are asked for a class before any label: the classes are known up front.
        validation={"labels": [False, True]},
    )
    spec = parse_reviewer("simulated:accuracy=0.6,delay=1s,seed=3")
    answers = SimulatedAnswers(spec, true_labels("river:Phishing", 400))
    core = LearningCore.from_config(cfg)
    records = open_source("river:Phishing", SourceOptions(limit=400))
    report = simulate(cfg, records, LabelDelay(events=100), answer=answers.answer, core=core)
    corrections = report["review"]["corrections"]
    assert corrections > 0
    tree = core.state.challengers.members[0]  # type: ignore[union-attr]
    # The champion's count includes the corrections (its version counts every label learned).
    assert tree.learned == core.state.learned


def test_a_challenger_that_took_over_is_guarded_and_rolled_back_to_itself() -> None:
    """The guard follows the champion: after a takeover its copy is the new champion's, so a
    poisoned label rolls back to the challenger that took over, not to the old champion."""
    cfg = config_for(
        model={
            "spec": "dummy.NoChangeClassifier",
            "challengers": [{"name": "logreg", "spec": LOGREG}],
        },
        challengers={"promote": "auto"},
        gating={"min_labels": 50, "window": 100, "margin": 0.05},
    )
    core = LearningCore.from_config(cfg)
    feed(core, records(400))
    champion = core.state.model
    assert type(champion).__name__ == "Pipeline" and core.guard is not None
    features = dict(next(r for k, r, _, _ in records(1) if k == "event").features)
    for i, big in enumerate((1e308, -1e308)):
        poisoned = {name: big for name in features}
        core.on_event(Event(id=f"poison-{i}", ts=10_000.0 + i, features=poisoned))
        core.on_label(Label(id=f"poison-{i}", ts=10_000.5 + i, label=True))
    assert core.state.model_rollbacks >= 1
    assert type(core.state.model).__name__ == "Pipeline"  # not the NoChangeClassifier
    assert core.guard.finite(core.state.model)
