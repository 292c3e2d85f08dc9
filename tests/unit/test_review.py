"""Humans in the loop, in the pure core: policies, budget, defer with deadline, human scoring."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from river import active

from pipeline.config import ConfigError, load_config
from pipeline.core import LearningCore, Outcome
from pipeline.review import GivenProba, TokenBucket
from pipeline.schemas import Event, Label, Prediction, ReviewRequest
from pipeline.telemetry import LatencyHistogram, LatencyQuantiles
from producers.sources import open_source

LOGREG = "preprocessing.StandardScaler | linear_model.LogisticRegression"


def core_for(review: dict[str, Any], **overrides: Any) -> LearningCore:
    config = {
        "name": "unit-review",
        "model": {"spec": LOGREG},
        "fallback": {"default": False},
        "gating": {"min_labels": 1000},
        "review": review,
        **overrides,
    }
    return LearningCore.from_config(load_config(None, config, environ={}))


def requests(outcome: Outcome) -> list[ReviewRequest]:
    return [o.record for o in outcome.review if isinstance(o.record, ReviewRequest)]


def predictions(outcome: Outcome) -> list[Prediction]:
    return [o.record for o in outcome.review if isinstance(o.record, Prediction)]


def event(i: int, ts: float | None = None, x: float = 1.0) -> Event:
    return Event(id=str(i), ts=float(i if ts is None else ts), features={"x": x})


def human(i: int, y: Any, ts: float, answered_at: float | None = None) -> Label:
    return Label(id=str(i), ts=ts, label=y, source="human", reviewer="ann", answered_at=answered_at)


def phishing(n: int) -> list[tuple[Event, Any]]:
    rows = []
    for i, record in enumerate(open_source("river:Phishing")):
        if i == n:
            break
        rows.append((Event(id=record.id, ts=record.ts, features=record.features), record.label))
    return rows


def test_policy_none_sends_nothing() -> None:
    core = core_for({})
    for i in range(5):
        assert requests(core.on_event(event(i))) == []
    assert core.report()["review"]["sent"] == 0


def test_unserved_asks_for_every_event_the_model_does_not_serve() -> None:
    core = core_for({"policy": "unserved"}, gating={"min_labels": 0})
    sent = []
    for e, y in phishing(200):
        outcome = core.on_event(e)
        assert outcome.prediction is not None
        if requests(outcome):
            sent.append(outcome.prediction.source)
        else:
            assert outcome.prediction.source == "model"
        core.on_label(Label(id=e.id, ts=e.ts + 0.5, label=y))
    assert sent and set(sent) == {"default"}
    assert core.report()["review"]["sent"] == len(sent)


def test_uncertain_asks_below_the_confidence_and_without_an_opinion() -> None:
    core = core_for({"policy": "uncertain", "confidence_below": 0.9})
    asked, expected = [], []
    for e, y in phishing(300):
        x = dict(e.features)
        proba = core.state.model.predict_proba_one(x)  # type: ignore[attr-defined]
        expected.append(not proba or max(proba.values()) < 0.9)
        asked.append(bool(requests(core.on_event(e))))
        core.on_label(Label(id=e.id, ts=e.ts + 0.5, label=y))
    assert asked == expected
    assert 0 < sum(asked) < 300


def test_entropy_follows_rivers_sampler_with_the_seed() -> None:
    """The same choices as River's EntropySampler wrapping the same model, seed and factor
    (a fixed factor: target_share null)."""

    def fixed() -> LearningCore:
        # target_share null (as in a YAML file: an override of None means "unset").
        config = load_config(
            None,
            {
                "name": "unit-review",
                "model": {"spec": LOGREG},
                "fallback": {"default": False},
                "gating": {"min_labels": 1000},
                "review": {"policy": "entropy", "discount_factor": 2.0, "seed": 7},
            },
            environ={},
        )
        review = config.review.model_copy(update={"target_share": None})
        return LearningCore.from_config(config.model_copy(update={"review": review}))

    core = fixed()
    reference = active.EntropySampler(GivenProba(), discount_factor=2.0, seed=7)
    asked, expected = [], []
    for e, y in phishing(400):
        proba = core.state.model.predict_proba_one(dict(e.features))  # type: ignore[attr-defined]
        if proba:
            expected.append(reference.predict_proba_one({}, proba=proba)[1])
        else:
            expected.append(True)  # no opinion yet: a person is asked
        asked.append(bool(requests(core.on_event(e))))
        core.on_label(Label(id=e.id, ts=e.ts + 0.5, label=y))
    assert asked == expected
    assert 0 < sum(asked) < 400
    # Seeded: a second run asks about exactly the same events.
    again = fixed()
    second = []
    for e, y in phishing(400):
        second.append(bool(requests(again.on_event(e))))
        again.on_label(Label(id=e.id, ts=e.ts + 0.5, label=y))
    assert second == asked


def test_entropy_needs_a_classifier() -> None:
    with pytest.raises(ConfigError, match=r"review\.policy"):
        core_for(
            {"policy": "entropy"},
            model={"spec": "linear_model.LinearRegression"},
            evaluation={"metric": "MAE"},
        )


def test_budget_bucket_refills_over_event_time() -> None:
    bucket = TokenBucket(per_minute=3.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(19.0) is False  # 19 s of event time: 0.95 of a token
    assert bucket.take(20.0) is True
    assert bucket.take(10.0) is False  # time stepping back refills nothing
    assert bucket.take(1000.0) and bucket.take(1000.0) and bucket.take(1000.0)
    assert bucket.take(1000.0) is False  # never more than a minute's worth


def test_budget_and_max_pending_skip_and_count() -> None:
    # Events every second, a budget of 6 a minute: 6 at once, then one every 10 s.
    core = core_for({"policy": "unserved", "budget_per_minute": 6, "deadline_seconds": None})
    sent = [i for i in range(60) if requests(core.on_event(event(i)))]
    assert sent == [0, 1, 2, 3, 4, 5, 10, 20, 30, 40, 50]
    review = core.report()["review"]
    assert (review["sent"], review["skipped_budget"]) == (11, 49)
    bounded = core_for({"policy": "unserved", "max_pending": 3, "deadline_seconds": None})
    sent = [i for i in range(10) if requests(bounded.on_event(event(i)))]
    assert sent == [0, 1, 2]
    assert bounded.report()["review"]["skipped_pending"] == 7
    bounded.on_label(human(1, True, ts=10.5))  # an answer frees a place
    assert requests(bounded.on_event(event(11)))


def test_request_carries_the_models_and_the_rules_opinion() -> None:
    core = core_for(
        {"policy": "uncertain", "confidence_below": 1.0, "deadline_seconds": 30},
        fallback={"rules": [{"feature": "x", "op": ">", "value": 0, "prediction": True}]},
    )
    core.on_event(event(0))
    core.on_label(Label(id="0", ts=0.5, label=False))
    (request,) = requests(core.on_event(event(1, x=2.0)))
    assert (request.id, request.ts, request.requested_at, request.deadline) == ("1", 1.0, 1.0, 31)
    # The rule's answer (known before any label), then the model's classes: not just those seen.
    assert request.task == "classification" and request.classes == [True, False]
    assert request.rules is not None and request.rules.prediction is True
    assert request.rules.source == "heuristic"
    assert request.model is not None and request.model.model_version == 1
    assert request.model.confidence is not None and 0.5 <= request.model.confidence <= 1.0
    assert request.mode == "label" and request.features == {"x": 2.0}


def test_label_mode_serves_now_and_corrects_with_the_persons_answer() -> None:
    core = core_for({"policy": "unserved"})
    outcome = core.on_event(event(0))
    assert outcome.prediction is not None and outcome.prediction.source == "default"
    answer = core.on_label(human(0, True, ts=3.0, answered_at=12.5))
    assert answer.learned and core.state.labels == 1
    (corrected,) = predictions(answer)
    assert (corrected.id, corrected.prediction, corrected.source) == ("0", True, "human")
    assert corrected.reviewer == "ann"
    review = core.report()["review"]
    assert review["answered"] == 1 and review["labels_by_source"] == {"human": 1}
    assert review["time_to_answer_s"]["count"] == 1
    assert review["time_to_answer_s"]["max"] == 12.5


def test_a_review_book_checkpointed_with_p2_quantiles_carries_them_into_a_histogram() -> None:
    # Before the histogram the book held River's P² estimates (LatencyQuantiles); a pickle of
    # such a book is what a checkpoint from then holds.
    core = core_for({"policy": "unserved"})
    book = core.state.review
    assert book is not None
    old = LatencyQuantiles()
    for seconds in range(1, 301):
        old.update(float(seconds))
    book.time_to_answer = old  # type: ignore[assignment]
    restored = pickle.loads(pickle.dumps(book))
    assert isinstance(restored.time_to_answer, LatencyHistogram)
    before, after = old.summary(), restored.report()["time_to_answer_s"]
    assert after["count"] == 300 and after["max"] == 300.0
    for q in ("p50", "p90", "p99"):
        assert abs(after[q] / before[q] - 1) <= 0.005
    restored.time_to_answer.update(1000.0)
    assert restored.report()["time_to_answer_s"]["max"] == 1000.0


def test_defer_holds_until_the_person_answers() -> None:
    core = core_for({"policy": "unserved", "mode": "defer", "deadline_seconds": 10})
    held = core.on_event(event(0))
    assert held.prediction is None and requests(held)[0].mode == "defer"
    assert "default" not in core.state.served_by
    answer = core.on_label(human(0, True, ts=4.0))
    (served,) = predictions(answer)
    assert (served.id, served.ts, served.prediction, served.source) == ("0", 0.0, True, "human")
    assert served.deadline_passed is None
    assert core.state.served_by["human"] == 1
    assert core.report()["review"]["held"] == 0


def test_defer_serves_the_fallback_once_the_deadline_passes_in_event_time() -> None:
    core = core_for({"policy": "unserved", "mode": "defer", "deadline_seconds": 10})
    assert core.on_event(event(0)).prediction is None
    for i in range(1, 10):
        outcome = core.on_event(event(i))
        assert predictions(outcome) == []  # event time 9 < deadline 10
    outcome = core.on_event(event(10))
    (late,) = predictions(outcome)
    assert (late.id, late.prediction, late.source, late.deadline_passed) == (
        "0",
        False,
        "default",
        True,
    )
    review = core.report()["review"]
    assert review["expired"] == 1 and review["served_deadline"] == 1
    # An answer after the deadline is still a label, but serves nothing.
    answer = core.on_label(human(0, True, ts=10.5))
    assert predictions(answer) == [] and answer.learned
    assert core.report()["review"]["late_answers"] == 1


def test_held_events_survive_a_checkpoint() -> None:
    review = {"policy": "unserved", "mode": "defer", "deadline_seconds": 100}
    core = core_for(review)
    for i in range(3):
        core.on_event(event(i))
    state = pickle.loads(pickle.dumps(core.state))
    resumed = LearningCore.from_config(
        load_config(
            None,
            {
                "name": "unit-review",
                "model": {"spec": LOGREG},
                "fallback": {"default": False},
                "gating": {"min_labels": 1000},
                "review": review,
            },
            environ={},
        ),
        state,
    )
    assert resumed.report()["review"]["held"] == 3
    (served,) = predictions(resumed.on_label(human(1, True, ts=5.0)))
    assert served.id == "1" and served.source == "human"
    late = predictions(resumed.on_event(event(200)))
    assert [p.id for p in late] == ["0", "2"] and all(p.deadline_passed for p in late)


def test_ground_truth_first_scores_the_person_and_teaches_the_model_once() -> None:
    core = core_for({"policy": "unserved"})
    core.on_event(event(0))
    assert core.on_label(Label(id="0", ts=1.0, label=True)).learned
    answer = core.on_label(human(0, False, ts=2.0))
    assert not answer.learned and core.state.labels == 1
    review = core.report()["review"]
    assert review["labels_by_source"] == {"ground_truth": 1}
    assert review["human_scored"] == 1 and review["human_metrics"]["Accuracy"] == 0.0
    assert core.report()["duplicate_labels"] == 0


def test_person_first_then_ground_truth_corrects_only_when_it_disagrees() -> None:
    core = core_for({"policy": "unserved"})
    core.on_event(event(0))
    core.on_event(event(1))
    core.on_label(human(0, True, ts=2.0))
    core.on_label(human(1, True, ts=2.0))
    assert core.state.labels == 2
    agree = core.on_label(Label(id="0", ts=3.0, label=True))
    assert not agree.learned and core.state.labels == 2
    intercept = core.state.model["LogisticRegression"].intercept  # type: ignore[index]
    disagree = core.on_label(Label(id="1", ts=3.0, label=False))
    assert disagree.learned and core.state.labels == 3
    assert core.state.model["LogisticRegression"].intercept < intercept  # type: ignore[index]
    review = core.report()["review"]
    assert review["corrections"] == 1
    assert review["labels_by_source"] == {"ground_truth": 1, "human": 2}
    assert review["human_scored"] == 2 and review["human_metrics"]["Accuracy"] == 0.5
    assert core.report()["duplicate_labels"] == 0
    # A third label for the same event is a duplicate, as before.
    core.on_label(Label(id="1", ts=4.0, label=False))
    assert core.report()["duplicate_labels"] == 1


def test_answers_waiting_for_ground_truth_are_bounded() -> None:
    core = core_for({"policy": "unserved", "max_pending": 2})
    for i in range(4):
        core.on_event(event(i))
        core.on_label(human(i, True, ts=i + 0.5))
    review = core.report()["review"]
    assert review["awaiting_truth"] == 2 and review["human_unscored"] == 2


def test_a_wrong_deadline_config_names_the_field(tmp_path: Any) -> None:
    path = tmp_path / "review.yaml"
    path.write_text("review:\n  mode: defer\n  deadline_seconds: null\n")
    with pytest.raises(ConfigError, match="review: mode defer needs deadline_seconds"):
        load_config(path, environ={})


def test_simulated_reviewer_is_right_as_often_as_told_and_wrong_with_another_class() -> None:
    from producers.reviewer import SimulatedAnswers, parse_reviewer

    truth = {str(i): i % 3 == 0 for i in range(2000)}
    answers = SimulatedAnswers(parse_reviewer("simulated:accuracy=0.9,delay=2s,seed=3"), truth)
    right = 0
    for i in range(2000):
        request = ReviewRequest(
            id=str(i),
            pipeline="p",
            ts=float(i),
            features={},
            task="classification",
            mode="label",
            requested_at=float(i),
        )
        label = answers.answer(request)
        assert label is not None and (label.ts, label.answered_at) == (i + 2.0, i + 2.0)
        right += label.label == truth[str(i)]
        assert isinstance(label.label, bool)
    assert 0.88 < right / 2000 < 0.92


@pytest.mark.parametrize(
    "spec", ["people", "simulated:accuracy=1.5", "simulated:delay=5", "simulated:speed=2"]
)
def test_a_bad_reviewer_spec_is_refused(spec: str) -> None:
    from producers.reviewer import parse_reviewer

    with pytest.raises(ValueError):
        parse_reviewer(spec)


def test_demo_refuses_a_bad_reviewer_with_exit_2() -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app

    result = CliRunner().invoke(app, ["demo", "--reviewer", "simulated:accuracy=x"])
    assert result.exit_code == 2
    assert "--reviewer" in result.output


def test_report_page_and_curve_show_the_loop(tmp_path: Any) -> None:
    from pipeline.reporting import _human_share, write_learning_curve

    core = core_for({"policy": "unserved"}, evaluation={"history_every": 5})
    for i in range(40):
        core.on_event(event(i))
        if i % 2:
            core.on_label(human(i, True, ts=i + 0.5, answered_at=i + 3.0))
        else:
            core.on_label(Label(id=str(i), ts=i + 0.5, label=False))
    for i in range(1, 40, 2):
        core.on_label(Label(id=str(i), ts=41.0, label=i % 4 == 1))
    report = core.report()
    review = report["review"]
    assert review["labels_by_source"] == {"ground_truth": 30, "human": 20}
    assert review["human_scored"] == 20 and review["human_metrics"]["Accuracy"] == 0.5
    assert review["corrections"] == 10
    share = _human_share(report["history"])
    assert share is not None and share[1][-1] == pytest.approx(0.5)
    _png, page = write_learning_curve(report, tmp_path)
    text = page.read_text()
    assert "Humans in the loop" in text and "people&#x27;s Accuracy" in text


def test_request_offers_the_configured_classes_before_any_is_seen() -> None:
    core = core_for({"policy": "unserved"}, validation={"labels": [True, False]})
    (request,) = requests(core.on_event(event(0)))
    assert request.classes == [True, False] and request.model is not None
    assert request.model.proba == {"true": 0.5, "false": 0.5}


def test_request_carries_the_model_version_not_the_label_count() -> None:
    """The version is the labels *learned*: a label whose learn_one raised is not one."""
    core = core_for({"policy": "uncertain", "confidence_below": 1.0})
    core.on_event(event(0))
    core.on_label(Label(id="0", ts=0.5, label=False))
    core.state.learned = 0  # as if that learn_one had raised
    (request,) = requests(core.on_event(event(1, x=2.0)))
    assert request.model is not None
    assert request.model.model_version == core.model_version == 0 != core.state.labels


def test_the_first_request_offers_the_fallbacks_classes_before_any_label() -> None:
    """Issue 19: a request made before any label had ``classes: []``, so nobody could answer."""
    rules = [{"feature": "x", "op": ">", "value": 5.0, "prediction": True}]
    core = core_for({"policy": "unserved"}, fallback={"default": False, "rules": rules})
    (first,) = requests(core.on_event(event(0)))
    assert first.classes == [True, False]
    core.on_label(Label(id="0", ts=0.5, label=True))
    (second,) = requests(core.on_event(event(1)))
    assert second.classes == [True, False]  # the same buttons, in the same order


def test_a_classifier_with_no_known_class_is_told_what_to_set() -> None:
    with pytest.raises(ConfigError, match=r"validation\.labels: .*set validation\.labels"):
        load_config(
            None,
            {"model": {"spec": LOGREG}, "review": {"policy": "unserved"}},
            environ={},
        )
    # Nothing to ask without a review policy, and a regressor answers with a number.
    load_config(None, {"model": {"spec": LOGREG}}, environ={})
    load_config(
        None,
        {
            "model": {"spec": "linear_model.LinearRegression"},
            "evaluation": {"metric": "MAE"},
            "review": {"policy": "unserved"},
        },
        environ={},
    )


def test_summary_counts_each_kind_of_label_by_what_it_is(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 19: corrections by ground truth were reported as labels "raised in the model"."""
    from pipeline.cli.summary import print_summary

    core = core_for({"policy": "unserved"})
    for i in range(3):
        core.on_event(event(i))
    core.on_label(human(0, True, ts=3.0))
    core.on_label(human(1, True, ts=3.0))
    core.on_label(Label(id="1", ts=4.0, label=False))  # corrects the person
    core.on_label(Label(id="2", ts=4.0, label=False))  # ground truth first...
    core.on_label(human(2, False, ts=5.0))  # ...so the person's answer is only scored
    report = core.report()
    assert report["labels"] == report["model_version"] == 4
    assert report["review"]["corrections"] == 1 and report["review"]["answers_after_truth"] == 1
    print_summary(report)
    out = capsys.readouterr().out
    assert "raised in the model" not in out
    assert "3 events, 4 labels, 4 learned (1 of them ground truth correcting a person)" in out
    assert "labels not learned: 1 answers from people only scored (ground truth came first)" in out


def test_the_request_says_why_the_model_and_the_rules_answered() -> None:
    """Issue 19, point 4: the model's explanation beside its answer, the rule that fired."""
    rules = [{"feature": "x", "op": ">", "value": 0.5, "prediction": True}]
    core = core_for(
        {"policy": "uncertain", "confidence_below": 1.0},
        fallback={"default": False, "rules": rules},
        explain={"enabled": True},  # the explainer's output, as predictions carry it
    )
    core.on_event(event(0))
    core.on_label(Label(id="0", ts=0.5, label=False))
    (request,) = requests(core.on_event(event(1, x=2.0)))
    assert request.rules is not None and request.rules.rule == "x > 0.5 -> True"
    assert request.model is not None and request.model.explanation
    assert request.model.explanation[0]["feature"] == "x"
    (default,) = requests(core.on_event(event(2, x=0.0)))
    assert default.rules is not None and default.rules.rule is None  # the default answered


def test_entropy_steers_to_its_target_share_with_the_default_config() -> None:
    """Issue 19, point 6: no per-dataset discount factor. A model always unsure (0.6 / 0.4)
    would be asked about ~91% of the time at the fixed factor 3; steered, about 35%."""
    from pipeline.review import ReviewBook, ReviewPolicy

    settings = {"review": {"policy": "entropy"}, "fallback": {"default": False}}
    config = load_config(None, settings, environ={}).review
    assert config.target_share == 0.35
    policy = ReviewPolicy(config, "unit", classifier=True, classes=[False, True])
    book = ReviewBook.new(config, ("Accuracy",))
    asked = [
        policy.wants(book, {"x": 1}, {True: 0.6, False: 0.4}, served_by_model=False)
        for _ in range(6000)
    ]
    share = sum(asked[-3000:]) / 3000
    assert 0.30 <= share <= 0.40, share
    fixed = config.model_copy(update={"target_share": None})
    book = ReviewBook.new(fixed, ("Accuracy",))
    unsteered = [
        ReviewPolicy(fixed, "unit", True).wants(book, {"x": 1}, {True: 0.6, False: 0.4}, False)
        for _ in range(3000)
    ]
    assert sum(unsteered) / 3000 > 0.85
