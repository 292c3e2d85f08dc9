"""The foundation end to end, on a real Kafka-protocol broker and a real Redis."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaProducer
from river import datasets, evaluate

from pipeline.checkpointing.store import CheckpointStore
from pipeline.models import make_metric, parse_model_spec
from pipeline.state.redis_client import connect
from tests.conftest import TEST_SECRET
from tests.integration.helpers import consume, json_values, learning_state, publish, read_topic

pytestmark = pytest.mark.integration

LOGREG = "preprocessing.StandardScaler | linear_model.LogisticRegression"


def test_phishing_logreg_rocauc_equals_river(make_config: Any, transport: str) -> None:
    cfg = make_config(
        {
            "model": {"spec": LOGREG},
            "evaluation": {"metric": "ROCAUC", "extra_metrics": []},
            "kafka": {"partitions": 1},
        }
    )
    published = publish(cfg, "river:Phishing", "50")
    assert (published.events, published.labels) == (1250, 1250)
    report = consume(cfg)
    expected = evaluate.progressive_val_score(
        datasets.Phishing(), parse_model_spec(LOGREG), make_metric("ROCAUC"), delay=50
    )
    assert report["labels"] == 1250
    assert report["metrics"]["model"]["ROCAUC"] == expected.get()  # the same float


def test_trump_approval_regression_across_partitions_equals_river(
    make_config: Any, transport: str
) -> None:
    """Second case: a regressor, MAE, and three partitions merged back into River's order."""
    spec = "preprocessing.StandardScaler | linear_model.LinearRegression(intercept_lr=0.05)"
    cfg = make_config(
        {
            "model": {"spec": spec},
            "evaluation": {"metric": "MAE"},
            "kafka": {"partitions": 3},
            "fallback": {"default": 40.0},
        }
    )
    publish(cfg, "river:TrumpApproval", "20")
    report = consume(cfg)
    expected = evaluate.progressive_val_score(
        datasets.TrumpApproval(), parse_model_spec(spec), make_metric("MAE"), delay=20
    )
    assert report["events"] == report["labels"] == 1001
    assert report["metrics"]["model"]["MAE"] == expected.get()


def test_fetch_sizes_do_not_change_the_result(make_config: Any, pipeline_name: str) -> None:
    cfg = make_config({"kafka": {"partitions": 3}, "evaluation": {"metric": "ROCAUC"}})
    publish(cfg, "river:Phishing", "25")
    topics = {"kafka": {"topics": cfg.kafka.topics.model_dump(), "partitions": 3}}
    tiny = make_config(topics, name=f"{pipeline_name}-tiny")
    large = make_config(topics, name=f"{pipeline_name}-large")
    report_tiny = consume(
        tiny, max_poll_records=1, max_partition_fetch_bytes=512, fetch_max_bytes=512
    )
    report_large = consume(large, max_poll_records=5000, fetch_max_bytes=50 * 1024 * 1024)
    assert report_tiny["labels"] == report_large["labels"] == 1250
    assert learning_state(report_tiny) == learning_state(report_large)


def test_predictions_and_dead_letters_are_published(make_config: Any) -> None:
    cfg = make_config({"evaluation": {"metric": "Accuracy"}, "fallback": {"default": False}})
    publish(cfg, "river:Phishing", "10", limit=200)
    producer = KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap)
    bad = {
        b"\xff\xfe not utf-8": "not_utf8",
        b"{not json": "not_json",
        b'{"id": "x1", "features": {}}': "missing_field",
        b'{"id": "x2", "ts": "noon", "features": {}}': "wrong_type",
        b'{"id": "x3", "ts": 1.0, "features": {"a": [1, 2]}}': "nested_feature",
        b'["an", "array"]': "not_an_object",
    }
    for raw in bad:
        producer.send(cfg.kafka.topics.events, key=b"k", value=raw)
    producer.flush()
    producer.close()
    report = consume(cfg)
    assert report["events"] == 200
    assert report["dead_letters"] == {reason: 1 for reason in bad.values()}
    letters = json_values(read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.dead_letters))
    assert sorted(letter["reason"] for letter in letters) == sorted(bad.values())
    import base64

    assert {base64.b64decode(letter["value_b64"]) for letter in letters} == set(bad)
    assert all(letter["topic"] == cfg.kafka.topics.events for letter in letters)
    predictions = json_values(read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.predictions))
    assert len(predictions) == 200
    assert {p["id"] for p in predictions} == {str(i) for i in range(200)}
    by_source: dict[str, int] = {}
    for p in predictions:
        by_source[p["source"]] = by_source.get(p["source"], 0) + 1
        assert p["mode"] in ("cold", "shadow", "serving")
    assert by_source == report["predictions_by_source"]


def _run_cli(args: list[str], env: dict[str, str], **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_sigterm_then_resume_equals_an_uninterrupted_run(
    make_config: Any, pipeline_name: str, tmp_path: Path
) -> None:
    overrides = {
        "model": {"spec": "forest.ARFClassifier(seed=1, n_models=5)"},
        "evaluation": {"metric": "Accuracy"},
        "fallback": {"default": False},
        "kafka": {"partitions": 2},
        "checkpoint": {"every_labels": 100, "every_seconds": 3600},
    }
    cfg = make_config(overrides)
    published = publish(cfg, "river:Bananas", "30")
    total = published.labels
    config_file = tmp_path / "run.yaml"
    data = json.loads(cfg.model_dump_json())
    data["checkpoint"]["secret"] = None
    config_file.write_text(yaml.safe_dump(data))
    env = {**os.environ, "RIVERLINE_CHECKPOINT_SECRET": TEST_SECRET}
    args = ["run", "--config", str(config_file), "--until-idle", "2", "--log-level", "INFO"]

    store = CheckpointStore(connect(cfg.redis.url), cfg.name, TEST_SECRET.encode())
    first = _run_cli([*args, "--report", str(tmp_path / "first.json")], env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        version = store.latest_version()
        meta = store.meta(version) if version else None
        if meta and meta["labels"] >= total // 4:
            break
        time.sleep(0.02)
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr
    interrupted = json.loads((tmp_path / "first.json").read_text())
    assert 0 < interrupted["labels"] < total, "the signal must land mid-stream"

    second = _run_cli([*args, "--report", str(tmp_path / "second.json")], env)
    _, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stderr
    resumed = json.loads((tmp_path / "second.json").read_text())
    assert "resuming from checkpoint" in stderr

    reference = consume(
        make_config(
            {**overrides, "kafka": {"partitions": 2, "topics": cfg.kafka.topics.model_dump()}},
            name=f"{pipeline_name}-reference",
        )
    )
    assert resumed["labels"] == total
    assert learning_state(resumed) == learning_state(reference)


def test_demo_command_end_to_end(tmp_path: Path, backends: Any) -> None:
    """The quick start's main command, on the embedded broker as a user runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERLINE_")}
    env["RIVERLINE_REDIS_URL"] = backends.redis
    report_path = tmp_path / "demo.json"
    riverline = str(Path(sys.executable).with_name("riverline"))  # the console script
    args = ["demo", "--report", str(report_path), "--out", str(tmp_path), "--keep-state"]
    proc = subprocess.run(
        [riverline, *args, "--metrics-port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(report_path.read_text())
    assert report["events"] == report["labels"] == 1250
    assert report["promotions"], "on Phishing the model overtakes the rules"
    assert set(report["metrics"]) == {"model", "fallback", "served"}
    assert set(report["predictions_by_source"]) >= {"heuristic", "model"}
    for key in ("mode", "checkpoint_version", "expired_unlabelled", "dead_letters", "demotions"):
        assert key in report
    assert "Predictions served by source" in proc.stdout
    assert "promotion at label" in proc.stdout
    # The output explains itself: the gating metric, and that the model was promoted on it.
    assert "ROCAUC (gates promotion)" in proc.stdout
    assert "ROCAUC gates promotion" in proc.stdout and "took over at label" in proc.stdout
    # Latency: processing apart from the time records waited in the topic.
    assert "processing per record, ms: p50" in proc.stdout
    assert "mostly time waiting in the topic" in proc.stdout
    assert re.search(r"metrics on http://127\.0\.0\.1:\d+/metrics", proc.stderr)
    lines = proc.stdout.splitlines()
    curve = [line.strip() for line in lines if line.strip().endswith(("-curve.png", "-curve.html"))]
    assert len(curve) == 2 and all(Path(p).exists() for p in curve)  # one path per line
    name = re.search(r"^pipeline name: (\S+)$", proc.stdout, re.MULTILINE)
    secret = re.search(r"export RIVERLINE_CHECKPOINT_SECRET=(\w+)", proc.stdout)
    assert name and secret and f"riverline status --name {name[1]}" in proc.stdout
    # --keep-state keeps it for status and report.
    env["RIVERLINE_CHECKPOINT_SECRET"] = secret[1]
    try:
        status = subprocess.run(
            [riverline, "status", "--name", name[1]], env=env, capture_output=True, text=True
        )
        assert status.returncode == 0, status.stderr
        assert "serving" in status.stdout
        reported = subprocess.run(
            [riverline, "report", "--name", name[1], "--out", str(tmp_path / "again")],
            env=env,
            capture_output=True,
            text=True,
        )
        assert reported.returncode == 0, reported.stderr
    finally:
        subprocess.run(
            [riverline, "pipeline", "delete", name[1], "--yes", "--redis-url", backends.redis],
            env=env,
            capture_output=True,
        )


def test_replay_and_predictions_are_co_partitioned(make_config: Any, transport: str) -> None:
    """An event, its label and its prediction share a partition number (explicit on produce)."""
    cfg = make_config(
        {
            "kafka": {"partitions": 3},
            "evaluation": {"metric": "Accuracy"},
            "fallback": {"default": False},
        }
    )
    publish(cfg, "river:Phishing", "10", limit=300)
    assert consume(cfg)["events"] == 300
    bootstrap, topics = cfg.kafka.bootstrap, cfg.kafka.topics
    event_partition = {
        json.loads(r.value)["id"]: r.partition for r in read_topic(bootstrap, topics.events)
    }
    assert len(event_partition) == 300
    assert set(event_partition.values()) == {0, 1, 2}  # spread by key over every partition
    labels = read_topic(bootstrap, topics.labels)
    assert len(labels) == 300
    assert all(event_partition[json.loads(r.value)["id"]] == r.partition for r in labels)
    predictions = read_topic(bootstrap, topics.predictions)
    assert len(predictions) == 300
    assert all(event_partition[json.loads(r.value)["id"]] == r.partition for r in predictions)
