"""Messy data in, nothing lost: fuzzed bad records, a bounded join buffer, a model that raises."""

from __future__ import annotations

import base64
import json
import pickle
import threading
import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from consumers.run import Consumer
from pipeline.state.redis_client import connect
from tests.integration.helpers import consume, json_values, learning_state, publish, read_topic

pytestmark = pytest.mark.integration

TS = 1_700_000_500.0
LIMITS = {
    "labels": [True, False],
    "max_record_bytes": 2048,
    "max_features": 20,
    "max_string_length": 64,
    "min_ts": 1_600_000_000,
    "max_future_seconds": 86_400,
}


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def event(**fields: Any) -> dict[str, Any]:
    return {"id": "bad", "ts": TS, "features": {"a": 1.0}, **fields}


scalar = st.one_of(st.integers(-5, 5), st.floats(-1, 1, allow_nan=False), st.booleans())
nested = st.one_of(
    st.dictionaries(st.text(max_size=3), scalar, max_size=2), st.lists(scalar, max_size=2)
)

# Each strategy gives (topic kind, raw bytes, the reason the consumer must give).
BAD_EVENTS = st.one_of(
    st.binary(max_size=40).map(lambda b: ("event", b"\xff" + b, "not_utf8")),
    st.text(max_size=30).map(lambda t: ("event", ("{{" + t).encode(), "not_json")),
    st.one_of(st.integers(), st.lists(st.integers(), max_size=3), st.text(max_size=8)).map(
        lambda v: ("event", dumps(v), "not_an_object")
    ),
    st.sampled_from(["id", "ts", "features"]).map(
        lambda f: ("event", dumps({k: v for k, v in event().items() if k != f}), "missing_field")
    ),
    st.one_of(st.integers(), st.lists(scalar, max_size=2)).map(
        lambda v: ("event", dumps(event(id=v)), "wrong_type")
    ),
    st.text(min_size=1, max_size=5)
    .filter(lambda k: k not in event() and k not in ("key", "attributes"))
    .map(lambda k: ("event", dumps({**event(), k: 1}), "unknown_field")),
    nested.map(lambda v: ("event", dumps(event(features={"a": v})), "nested_feature")),
    st.sampled_from(["NaN", "Infinity", "-Infinity"]).map(
        lambda t: (
            "event",
            f'{{"id":"bad","ts":{TS},"features":{{"a":{t}}}}}'.encode(),
            "not_finite",
        )
    ),
    st.integers(65, 200).map(
        lambda n: ("event", dumps(event(features={"s": "x" * n})), "value_too_long")
    ),
    st.integers(21, 60).map(
        lambda n: (
            "event",
            dumps(event(features={f"f{i}": i for i in range(n)})),
            "too_many_features",
        )
    ),
    st.integers(2049, 4000).map(
        lambda n: ("event", dumps(event(features={"s": "y" * n})), "record_too_large")
    ),
    st.floats(2 * 86_400, 1e6).map(
        lambda d: ("event", dumps(event(ts=time.time() + d)), "ts_in_future")
    ),
    st.floats(0, 1_599_999_999).map(lambda t: ("event", dumps(event(ts=t)), "ts_before_start")),
)
BAD_LABELS = st.one_of(
    st.one_of(st.text(max_size=5), st.integers(2, 9)).map(
        lambda v: ("label", dumps({"id": "bad", "ts": TS, "label": v}), "label_not_allowed")
    ),
    st.sampled_from(["human?", "oracle"]).map(
        lambda s: (
            "label",
            dumps({"id": "bad", "ts": TS, "label": True, "source": s}),
            "wrong_type",
        )
    ),
    st.binary(max_size=20).map(lambda b: ("label", b"\xfe" + b, "not_utf8")),
)
BAD = st.one_of(BAD_EVENTS, BAD_LABELS)


def test_ten_thousand_malformed_records_are_dead_lettered_and_change_nothing(
    make_config: Any, pipeline_name: str, transport: str
) -> None:
    overrides = {
        "evaluation": {"metric": "Accuracy"},
        "fallback": {"default": False},
        "kafka": {"partitions": 2},
        "validation": LIMITS,
    }
    cfg = make_config(overrides)
    clean = make_config(overrides, name=f"{pipeline_name}-clean")
    expected: Counter[str] = Counter()
    by_value: dict[bytes, str] = {}
    producer = KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap, linger_ms=20)
    topics = {"event": cfg.kafka.topics.events, "label": cfg.kafka.topics.labels}
    valid = iter(range(10**9))

    # Interleave: a slice of the valid replay, then a batch of generated bad records, again.
    @settings(
        max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.lists(BAD, min_size=50, max_size=50))
    def send_batch(batch: list[tuple[str, bytes, str]]) -> None:
        for kind, raw, reason in batch:
            producer.send(topics[kind], key=str(next(valid)).encode(), value=raw)
            expected[reason] += 1
            by_value.setdefault(raw, reason)

    send_batch()
    producer.flush()
    assert sum(expected.values()) == 10_000
    assert set(expected) == {
        "not_utf8",
        "not_json",
        "not_an_object",
        "missing_field",
        "wrong_type",
        "unknown_field",
        "nested_feature",
        "not_finite",
        "value_too_long",
        "too_many_features",
        "record_too_large",
        "ts_in_future",
        "ts_before_start",
        "label_not_allowed",
    }, "every kind of bad record is generated"
    publish(cfg, "river:Phishing", "10")
    publish(clean, "river:Phishing", "10")
    producer.close()

    report = consume(cfg, until_idle=2.0)
    reference = consume(clean, until_idle=2.0)
    assert report["dead_letters"] == dict(sorted(expected.items()))
    letters = json_values(read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.dead_letters))
    assert len(letters) == 10_000
    for letter in letters:
        raw = base64.b64decode(letter["value_b64"])
        assert by_value[raw] == letter["reason"], letter
    without_letters = {k: v for k, v in learning_state(report).items() if k != "dead_letters"}
    assert without_letters == {
        k: v for k, v in learning_state(reference).items() if k != "dead_letters"
    }


def test_bounded_join_buffer_over_a_long_run(make_config: Any) -> None:
    cap = 200
    cfg = make_config(
        {
            "evaluation": {"metric": "Accuracy"},
            "fallback": {"default": False},
            # Labels come 1,000 events late, so most events wait longer than the buffer allows.
            "join": {"ttl_events": None, "max_pending": cap},
            "checkpoint": {"every_labels": 10_000},
        }
    )
    publish(cfg, "river:Bananas", "1000")
    consumer = Consumer(cfg, cfg.kafka.bootstrap, connect(cfg.redis.url), until_idle=2)
    samples: list[tuple[int, int, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            join = consumer.core.state.join
            samples.append((len(join.pending), len(join.parked), len(join.joined)))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    sizes = []
    consumer.on_checkpoint = lambda *_: sizes.append(len(pickle.dumps(consumer.core.state)))
    report = consumer.run()
    done.set()
    sampler.join()
    assert samples and max(max(s[0], s[1]) for s in samples) <= cap
    # Every event is accounted for: learned, still pending, or expired (dead-lettered).
    assert report["events"] == 5300
    learned_or_waiting = report["labels"] + report["pending_events"]
    assert report["events"] == learned_or_waiting + report["expired_unlabelled"]
    assert report["dead_letters"]["event_evicted"] == report["expired_unlabelled"] > 0
    assert report["dead_letters"]["label_orphaned"] == report["expired_labels"] > 0
    # The whole learning state stays small: it does not grow with the stream. (The memory of
    # event ids is a fixed size, join.seen_ids' filters: set apart.)
    seen_ids = consumer.core.state.seen_ids
    assert seen_ids is not None and len(seen_ids.current) == seen_ids.blocks * 64  # fixed
    state_bytes = len(pickle.dumps(consumer.core.state)) - len(pickle.dumps(seen_ids))
    assert state_bytes < 600_000, state_bytes


def test_a_model_that_raises_does_not_stop_the_consumer(make_config: Any) -> None:
    cfg = make_config(
        {
            "model": {"spec": "linear_model.LogisticRegression"},
            "evaluation": {"metric": "Accuracy"},
            "fallback": {"default": False},
        }
    )
    producer = KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap)
    from pipeline.kafka.clients import ensure_topics

    ensure_topics(
        cfg.kafka, cfg.kafka.bootstrap, [cfg.kafka.topics.events, cfg.kafka.topics.labels]
    )
    for i in range(300):
        # Every tenth event carries a string where the linear model expects a number.
        x: dict[str, Any] = {"x": "strange"} if i % 10 == 0 else {"x": float(i % 2)}
        producer.send(
            cfg.kafka.topics.events,
            key=str(i).encode(),
            value=dumps({"id": str(i), "ts": TS + i, "features": x}),
        )
        producer.send(
            cfg.kafka.topics.labels,
            key=str(i).encode(),
            value=dumps({"id": str(i), "ts": TS + i + 0.5, "label": i % 2 == 1}),
        )
    producer.flush()
    producer.close()
    report = consume(cfg)
    assert report["events"] == report["labels"] == 300
    assert report["model_errors"] == 60  # 30 predictions and 30 learns
    assert report["dead_letters"] == {"model_error": 60}
    assert sum(report["predictions_by_source"].values()) == 300
    letters = json_values(read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.dead_letters))
    assert Counter(letter["reason"] for letter in letters) == {"model_error": 60}
    assert all("TypeError" in letter["message"] for letter in letters)
    # Learning went on around the errors exactly as the pure core does on the same stream.
    from pipeline.core import LearningCore
    from pipeline.schemas import Event, Label

    core = LearningCore.from_config(cfg)
    for i in range(300):
        x = {"x": "strange"} if i % 10 == 0 else {"x": float(i % 2)}
        core.on_event(Event(id=str(i), ts=TS + i, features=x))
        core.on_label(Label(id=str(i), ts=TS + i + 0.5, label=i % 2 == 1))
    assert report["metrics"] == core.report()["metrics"]
    assert core.state.model.weights["x"] > 0  # it learned from the good records


def test_replay_reports_malformed_rows_with_line_numbers(
    make_config: Any, tmp_path: Any, backends: Any
) -> None:
    import os
    import subprocess
    import sys

    cfg = make_config({})
    source = tmp_path / "rows.csv"
    source.write_text("id,ts,x,label\n1,10,0.5,a\n2,11,0.7\n3,12,0.1,b\n4,oops,0.2,a\n5,14,0.3,b\n")
    config_file = tmp_path / "c.yaml"
    config_file.write_text(
        "kafka:\n  topics:\n"
        + "".join(f"    {k}: {v}\n" for k, v in cfg.kafka.topics.model_dump().items())
    )
    env = {**os.environ, "RIVERLINE_KAFKA_BOOTSTRAP": backends.kafka}
    base = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "replay",
        "--config",
        str(config_file),
        "--source",
        str(source),
    ]
    stop = subprocess.run(base, env=env, capture_output=True, text=True, timeout=120)
    assert stop.returncode == 1
    assert "line 3: 3 fields where the header has 4" in stop.stderr
    assert "Traceback" not in stop.stderr
    skip = subprocess.run(
        [*base, "--on-error", "skip"], env=env, capture_output=True, text=True, timeout=120
    )
    assert skip.returncode == 0, skip.stderr
    assert "published 3 events and 3 labels" in skip.stderr
    assert "skipped 2 malformed rows" in skip.stderr
    events = json_values(read_topic(backends.kafka, cfg.kafka.topics.events))
    # The replay streams: in stop mode, row 1 was out before line 3 stopped it.
    assert sorted(e["id"] for e in events) == ["1", "1", "3", "5"]


def test_a_duplicate_event_far_beyond_the_join_ttl_is_dead_lettered(
    make_config: Any, tmp_path: Any
) -> None:
    """Through the console script: 1,200 events, then the first one's id again (1,200 events
    later, 12 times the TTL): one duplicate_event dead letter, one prediction per id."""
    from tests.integration.cli import cli_env, riverline
    from tests.integration.helpers import write_config

    cfg = make_config({"join": {"ttl_events": 100}, "fallback": {"default": False}})
    producer = KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap)
    for i in [*range(1200), 0]:
        producer.send(
            cfg.kafka.topics.events,
            key=f"e{i}".encode(),
            value=dumps({"id": f"e{i}", "ts": TS + i, "features": {"a": float(i % 7)}}),
        )
    producer.flush()
    producer.close()
    report = tmp_path / "report.json"
    config = write_config(cfg, tmp_path / "c.yaml")
    args = ["run", "--config", str(config), "--until-idle", "1", "--report", str(report)]
    result = riverline(args, cli_env())
    assert result.returncode == 0, result.stderr
    assert json.loads(report.read_text())["dead_letters"] == {"duplicate_event": 1}
    letters = json_values(read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.dead_letters))
    assert [(d["reason"], json.loads(base64.b64decode(d["value_b64"]))["id"]) for d in letters] == [
        ("duplicate_event", "e0")
    ]
    predictions = json_values(read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.predictions))
    assert sorted(p["id"] for p in predictions) == sorted(f"e{i}" for i in range(1200))
