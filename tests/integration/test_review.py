"""Humans in the loop end to end, on the real broker and real Redis.

A small scripted reviewer reads the review-requests topic and answers on the labels topic, as
the review app or a person's tool would.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from consumers.run import Consumer
from pipeline.checkpointing.store import CheckpointStore
from pipeline.core import LearningCore
from pipeline.schemas import Event, Label, ReviewRequest
from pipeline.state.redis_client import connect
from producers.replay import replay
from producers.reviewer import true_labels
from producers.schedule import parse_delay, schedule
from producers.sources import SourceOptions, open_source
from tests.conftest import TEST_SECRET
from tests.integration.helpers import (
    consume,
    json_values,
    read_topic,
    run_cli,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration

LOGREG = "preprocessing.StandardScaler | linear_model.LogisticRegression"


def publish_events(cfg: Any, limit: int, source: str = "river:Phishing") -> None:
    assert cfg.kafka.bootstrap is not None
    replay(cfg, cfg.kafka.bootstrap, source, None, options=SourceOptions(limit=limit))


def review_requests(cfg: Any) -> list[Any]:
    return read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.review_requests)


def answer(cfg: Any, requests: list[ReviewRequest], truth: dict[str, Any], after: float) -> None:
    """The scripted reviewer: the true label, ``after`` seconds of event time later."""
    producer = KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap)
    for request in requests:
        label = Label(
            id=request.id,
            ts=request.ts + after,
            label=truth[request.id],
            source="human",
            reviewer="script",
            answered_at=request.requested_at + after,
        )
        key = (request.key or request.id).encode()
        producer.send(cfg.kafka.topics.labels, key=key, value=label.model_dump_json().encode())
    producer.flush()
    producer.close()


def predictions_by_id(cfg: Any) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for value in json_values(read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.predictions)):
        out.setdefault(value["id"], []).append(value)
    return out


def test_requests_are_published_for_exactly_the_events_the_policy_picks(make_config: Any) -> None:
    cfg = make_config(
        {
            "model": {"spec": LOGREG},
            "fallback": {"default": False},
            "gating": {"min_labels": 50},
            "kafka": {"partitions": 2},
            "review": {"policy": "uncertain", "confidence_below": 0.8},
        }
    )
    assert cfg.kafka.bootstrap is not None
    replay(
        cfg,
        cfg.kafka.bootstrap,
        "river:Phishing",
        parse_delay("20"),
        options=SourceOptions(limit=300),
    )
    report = consume(cfg)
    # What the core picks on the same stream, in River's order, without a broker.
    core = LearningCore.from_config(cfg)
    expected = []
    for emission in schedule(
        open_source("river:Phishing", SourceOptions(limit=300)), parse_delay("20")
    ):
        r = emission.record
        if emission.kind == "event":
            outcome = core.on_event(Event(id=r.id, ts=emission.ts, features=r.features))
            expected += [o.record.id for o in outcome.review]
        else:
            core.on_label(Label(id=r.id, ts=emission.ts, label=r.label))  # type: ignore[arg-type]
    records = review_requests(cfg)
    sent = [ReviewRequest.model_validate_json(r.value) for r in records]
    assert sorted(r.id for r in sent) == sorted(expected)
    assert 0 < len(expected) < 300
    assert report["review"]["sent"] == len(expected)
    # Keyed like their events, and on the same partition numbers.
    events = {
        json.loads(r.value)["id"]: (r.key, r.partition)
        for r in read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.events)
    }
    assert {(r.key, r.partition) for r in records} <= set(events.values())
    for record, request in zip(records, sent, strict=True):
        assert events[request.id] == (record.key, record.partition)
        assert request.pipeline == cfg.name and request.mode == "label"


def test_answers_arrive_as_human_labels_and_the_model_learns_from_them(
    make_config: Any, tmp_path: Path
) -> None:
    cfg = make_config(
        {
            "model": {"spec": LOGREG},
            "fallback": {"default": False},
            "gating": {"min_labels": 1_000_000},  # the fallback serves: every event is asked
            "review": {"policy": "unserved", "deadline_seconds": None},
        }
    )
    publish_events(cfg, 60)
    first = consume(cfg)
    assert first["labels"] == 0 and first["review"]["sent"] == 60
    requests = [ReviewRequest.model_validate_json(r.value) for r in review_requests(cfg)]
    assert len(requests) == 60
    truth = true_labels("river:Phishing", 60)
    answer(cfg, requests, truth, after=0.5)
    second = consume(cfg)
    assert second["labels"] == 60
    review = second["review"]
    assert review["labels_by_source"] == {"human": 60}
    assert review["answered"] == 60 and review["pending"] == 0
    assert review["time_to_answer_s"]["count"] == 60
    # The model learned exactly what a model fed the same answers in the same order learns.
    store = CheckpointStore(connect(cfg.redis.url), cfg.name, TEST_SECRET.encode())
    status = json.loads(store.client.get(store.key("status")))  # what `riverline status` shows
    assert status["review"]["answered"] == 60
    assert status["review"]["labels_by_source"] == {"human": 60}
    shown = run_cli(
        ["status", "--config", str(write_config(cfg, tmp_path / "run.yaml"))],
        {**os.environ, "RIVERLINE_CHECKPOINT_SECRET": TEST_SECRET},
    )
    out, err = shown.communicate(timeout=60)
    assert shown.returncode == 0, err
    assert "review sent / answered / expired" in out and "60 / 60 / 0" in out
    assert "human 60" in out
    checkpoint = store.load_latest()
    assert checkpoint is not None
    learned = checkpoint.state.model
    by_hand = LearningCore.from_config(cfg).state.model
    rows = {r.id: r.features for r in open_source("river:Phishing", SourceOptions(limit=60))}
    for request in requests:
        by_hand.learn_one(
            {k: v for k, v in rows[request.id].items() if v is not None}, truth[request.id]
        )  # type: ignore[attr-defined]
    probe = list(rows.values())[:10]
    assert [learned.predict_proba_one(x) for x in probe] == [  # type: ignore[attr-defined]
        by_hand.predict_proba_one(x)
        for x in probe  # type: ignore[attr-defined]
    ]
    # Label mode: the fallback's answer first, then the person's, with source human.
    predictions = predictions_by_id(cfg)
    for request in requests:
        served = predictions[request.id]
        assert [p["source"] for p in served] == ["default", "human"]
        assert served[1]["prediction"] == truth[request.id] and served[1]["reviewer"] == "script"


def test_defer_serves_the_persons_answer_or_the_fallback_after_the_deadline(
    make_config: Any,
) -> None:
    cfg = make_config(
        {
            "model": {"spec": LOGREG},
            "fallback": {"default": False},
            "gating": {"min_labels": 1_000_000},
            "review": {"policy": "unserved", "mode": "defer", "deadline_seconds": 5},
        }
    )
    publish_events(cfg, 20)  # one a second of event time
    first = consume(cfg)
    # The watermark is event 19's time: events 0..14 are past their deadline, 15..19 held.
    assert first["review"]["held"] == 5 and first["review"]["served_deadline"] == 15
    requests = [ReviewRequest.model_validate_json(r.value) for r in review_requests(cfg)]
    truth = true_labels("river:Phishing", 20)
    answered = [r for r in requests if r.id in {"15", "16", "17"}]
    answer(cfg, answered, truth, after=4.5)
    second = consume(cfg)
    assert second["review"]["served_human"] == 3 and second["review"]["held"] == 2
    predictions = predictions_by_id(cfg)
    for i in range(15):
        (served,) = predictions[str(i)]
        assert served["source"] == "default" and served["deadline_passed"] is True
    for i in (15, 16, 17):
        (served,) = predictions[str(i)]
        assert served["source"] == "human" and served["prediction"] == truth[str(i)]
        assert served["deadline_passed"] is None
    assert "18" not in predictions and "19" not in predictions  # still held
    assert second["predictions_by_source"] == {"default": 15, "human": 3}


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL])
def test_a_restart_in_defer_mode_loses_no_held_event(
    make_config: Any, tmp_path: Path, stop_signal: signal.Signals
) -> None:
    cfg = make_config(
        {
            "model": {"spec": LOGREG},
            "fallback": {"default": False},
            "gating": {"min_labels": 1_000_000},
            "review": {"policy": "unserved", "mode": "defer", "deadline_seconds": 10_000},
            "checkpoint": {"every_seconds": 0.2, "lease_ttl_ms": 2000},
        }
    )
    publish_events(cfg, 40)
    config_file = write_config(cfg, tmp_path / "run.yaml")
    env = {**os.environ, "RIVERLINE_CHECKPOINT_SECRET": TEST_SECRET}
    store = CheckpointStore(connect(cfg.redis.url), cfg.name, TEST_SECRET.encode())

    def checkpointed_events() -> int:
        version = store.latest_version()
        meta = store.meta(version) if version else None
        return int(meta["events"]) if meta else 0

    proc = run_cli(["run", "--config", str(config_file), "--until-idle", "60"], env)
    try:
        wait_for(lambda: checkpointed_events() == 40, 120, "all 40 events checkpointed")
        proc.send_signal(stop_signal)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    checkpoint = store.load_latest()
    assert checkpoint is not None and checkpoint.state.review is not None
    assert len(checkpoint.state.review.requested) == 40  # held in the checkpointed state
    assert predictions_by_id(cfg) == {}  # nothing served yet: every event waits for a person
    requests = {
        r.id: r for r in (ReviewRequest.model_validate_json(x.value) for x in review_requests(cfg))
    }
    assert set(requests) == {str(i) for i in range(40)}
    truth = true_labels("river:Phishing", 40)
    answer(cfg, list(requests.values()), truth, after=1.0)
    resumed = consume(cfg)
    assert resumed["review"]["served_human"] == 40 and resumed["review"]["held"] == 0
    predictions = predictions_by_id(cfg)
    assert set(predictions) == set(requests)
    assert Counter(p["source"] for ps in predictions.values() for p in ps) == {"human": 40}
    assert all(ps[0]["prediction"] == truth[i] for i, ps in predictions.items())


def test_the_simulated_reviewer_answers_through_kafka(make_config: Any) -> None:
    from producers.reviewer import ReviewerSpec, SimulatedAnswers, SimulatedReviewer

    cfg = make_config(
        {
            "model": {"spec": LOGREG},
            "fallback": {"default": False},
            "gating": {"min_labels": 1_000_000},
            "review": {"policy": "unserved", "deadline_seconds": None},
        }
    )
    publish_events(cfg, 40)
    truth = true_labels("river:Phishing", 40)
    answers = SimulatedAnswers(ReviewerSpec(accuracy=0.8, delay_seconds=2.0, seed=5), truth)
    reviewer = SimulatedReviewer(cfg, cfg.kafka.bootstrap, answers).start()
    consumer = Consumer(cfg, cfg.kafka.bootstrap, connect(cfg.redis.url), until_idle=4.0)
    try:
        report = consumer.run()
    finally:
        reviewer.stop()
    registry = consumer.metrics.registry  # what Prometheus scrapes
    for outcome, n in (("sent", 40), ("answered", 40), ("skipped_budget", 0)):
        value = registry.get_sample_value("riverline_review_requests_total", {"outcome": outcome})
        assert value == n
    assert registry.get_sample_value("riverline_labels_learned_total", {"source": "human"}) == 40
    assert registry.get_sample_value(
        "riverline_review_time_to_answer_seconds", {"quantile": "p50"}
    ) == pytest.approx(2.0)
    assert reviewer.error is None and reviewer.answered == 40
    assert report["labels"] == 40 and report["review"]["labels_by_source"] == {"human": 40}
    labels = [
        Label.model_validate_json(r.value)
        for r in read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.labels)
    ]
    assert len(labels) == 40 and {x.reviewer for x in labels} == {"simulated"}
    right = sum(x.label == truth[x.id] for x in labels)
    assert 20 <= right < 40  # 80% right, from a seeded generator per id
    wrong = {x.id for x in labels if x.label != truth[x.id]}
    human = {i: ps[-1] for i, ps in predictions_by_id(cfg).items()}
    assert {i for i, p in human.items() if p["prediction"] != truth[i]} >= wrong


def test_demo_with_a_simulated_reviewer_and_no_ground_truth(
    make_config: Any, tmp_path: Path
) -> None:
    cfg = make_config()
    env = {**os.environ, "RIVERLINE_CHECKPOINT_SECRET": TEST_SECRET}
    args = [
        "demo",
        "--config",
        "configs/review.yaml",
        "--bootstrap",
        str(cfg.kafka.bootstrap),
        "--redis-url",
        cfg.redis.url,
        "--reviewer",
        "simulated:accuracy=1.0,delay=2s,seed=1",
        "--label-delay",
        "none",
        "--limit",
        "150",
        "--speed",
        "150",
        "--report",
        str(tmp_path / "report.json"),
        "--out",
        str(tmp_path),
    ]
    proc = run_cli(args, env)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    report = json.loads((tmp_path / "report.json").read_text())
    review = report["review"]
    assert review["sent"] > 0 and review["answered"] > 0
    assert set(review["labels_by_source"]) == {"human"}  # people were the only teachers
    assert report["labels"] == review["labels_by_source"]["human"]
    assert "simulated reviewer:" in stderr and "review requests:" in stdout


def test_requests_carry_the_nearest_labelled_events_and_the_page_shows_them(
    make_config: Any,
) -> None:
    """Issue 19 point 4: a request made once labels came carries the most similar labelled
    events (their true labels, nearest first), within the size every output keeps to; the
    review page lists them."""
    from tests.integration.review_support import (
        TOKEN,
        call,
        page_once_it_shows,
        publish_requests,
        served_app,
    )

    cfg = make_config(
        {
            "model": {"spec": LOGREG},
            "fallback": {"default": False},
            "gating": {"min_labels": 50},
            "review": {"policy": "unserved", "neighbours": 3, "neighbours_kept": 50},
        }
    )
    assert cfg.kafka.bootstrap is not None
    options = SourceOptions(limit=200)
    replay(cfg, cfg.kafka.bootstrap, "river:Phishing", parse_delay("20"), options=options)
    consume(cfg)
    truth = {r.id: r.label for r in open_source("river:Phishing", SourceOptions(limit=200))}
    records = review_requests(cfg)
    sent = [ReviewRequest.model_validate_json(r.value) for r in records]
    assert not sent[0].neighbours  # asked before any label: none to show
    later = [r for r in sent if r.neighbours]
    assert len(later) >= len(sent) // 2, (len(later), len(sent))
    assert len([r for r in later if len(r.neighbours) == 3]) >= len(later) - 2  # all but 1, 2
    for request in later:
        assert 1 <= len(request.neighbours) <= 3
        distances = [n.distance for n in request.neighbours]
        assert distances == sorted(distances) and all(0 <= d <= 1 for d in distances)
        for n in request.neighbours:
            assert n.label == truth[n.id] and n.id != request.id
    assert max(len(r.value) for r in records) < cfg.kafka.max_message_bytes

    shown = make_config(name=f"{cfg.name}-page")
    publish_requests(shown, [later[0].model_copy(update={"pipeline": shown.name})])
    with served_app(shown) as served:
        login = call(
            "POST",
            served.url + "/login",
            {"Content-Type": "application/x-www-form-urlencoded", "Origin": served.url},
            f"reviewer=carla&token={TOKEN}".encode(),
        )
        cookie = login.headers.get("set-cookie", "").split(";")[0]
        page = page_once_it_shows(served, cookie, 'id="neighbours"', "the request's neighbours")
    for n in later[0].neighbours:
        assert f">{n.distance:.3f}<" in page and n.id in page
