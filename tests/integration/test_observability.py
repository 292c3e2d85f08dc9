"""Seeing what the model does: /metrics during a run, the drift demo, status, the report."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from river import datasets

from consumers.run import Consumer
from pipeline.config import RiverlineConfig
from pipeline.kafka.embedded import free_port
from pipeline.state.redis_client import connect
from producers.replay import replay
from producers.schedule import parse_delay
from producers.sources import SourceOptions
from tests.conftest import TEST_SECRET
from tests.integration.helpers import wait_for, write_config

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def publish_grouped_phishing(cfg: RiverlineConfig, tmp_path: Path) -> None:
    """Phishing, labels 20 events late, with an attribute ``group`` alternating a, b."""
    assert cfg.kafka.bootstrap is not None
    source = tmp_path / "phishing.jsonl"
    with source.open("w") as f:
        for i, (x, y) in enumerate(datasets.Phishing()):
            f.write(json.dumps({"id": str(i), "label": y, "group": "ab"[i % 2], **x}) + "\n")
    options = SourceOptions(ts_column=None, attribute_columns=("group",))
    replay(cfg, cfg.kafka.bootstrap, str(source), parse_delay("20"), options=options)


def test_metrics_endpoint_matches_the_report(make_config: Any, tmp_path: Path) -> None:
    cfg = make_config(
        {
            "evaluation": {"metric": "Accuracy", "slice_by": "group"},
            "fallback": {"default": False},
            "gating": {"min_labels": 50},
            "telemetry": {"prometheus_port": 0, "status_every_seconds": 0.2},
            "checkpoint": {"every_labels": 100},
        }
    )
    publish_grouped_phishing(cfg, tmp_path)
    producer = KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap)
    for raw in (b"not json", b"[1]"):
        producer.send(cfg.kafka.topics.events, value=raw)
    producer.flush()
    producer.close()
    consumer = Consumer(cfg, cfg.kafka.bootstrap, connect(cfg.redis.url), until_idle=2)
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(report=consumer.run()))
    thread.start()
    wait_for(
        lambda: consumer.metrics_port is not None and consumer.core.state.events > 0,
        60,
        "a running consumer",
    )
    assert consumer.metrics_port is not None
    port = consumer.metrics_port
    wait_for(
        lambda: scrape(port).get(("riverline_events_total", ()), 0) > 0,
        30,
        "counters during the run",
    )
    thread.join(timeout=120)
    report = result["report"]
    samples = scrape(port)
    assert samples[("riverline_events_total", ())] == report["events"] == 1250
    assert samples[("riverline_labels_total", ())] == report["labels"]
    for source, count in report["predictions_by_source"].items():
        assert samples[("riverline_predictions_total", (("source", source),))] == count
    for reason, count in report["dead_letters"].items():
        assert samples[("riverline_dead_letters_total", (("reason", reason),))] == count
    assert report["dead_letters"] == {"not_json": 1, "not_an_object": 1}
    assert samples[("riverline_mode", (("mode", report["mode"]),))] == 1
    assert samples[("riverline_model_version", ())] == report["model_version"]
    assert samples[("riverline_windowed_metric", (("role", "model"),))] == pytest.approx(
        report["windowed"]["model"]
    )
    wall = samples[("riverline_event_to_prediction_seconds_count", (("clock", "wall"),))]
    assert wall == report["events"]
    event_clock = samples[("riverline_event_to_prediction_seconds_count", (("clock", "event"),))]
    assert event_clock == report["events"]
    slices = report["slices"]
    assert sorted(slices["slices"]) == ["a", "b"]
    for value, roles in slices["slices"].items():
        for role, by_name in roles.items():
            key = ("riverline_slice_metric", (("role", role), ("value", value)))
            assert samples[key] == pytest.approx(by_name["Accuracy"])
    for role, gap in slices["gap"].items():
        assert samples[("riverline_slice_gap", (("role", role),))] == pytest.approx(gap)
    assert samples[("riverline_learn_seconds_count", ())] >= report["labels"]
    lags = [v for (name, _), v in samples.items() if name == "riverline_consumer_lag"]
    assert lags and all(v == 0 for v in lags)  # drained
    latency = report["run"]["latency_ms"]["event_to_prediction"]
    assert latency["count"] == 1250 and latency["p50"] <= latency["p90"] <= latency["p99"]


def test_drift_demo_promotes_demotes_at_the_drift_and_promotes_again(
    tmp_path: Path, backends: Any
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERLINE_")}
    env["RIVERLINE_REDIS_URL"] = backends.redis
    env["RIVERLINE_KAFKA_BOOTSTRAP"] = backends.kafka
    report_path = tmp_path / "drift.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "demo",
            "--config",
            "configs/drift.yaml",
            "--source",
            "synth:SEA:seed=7,n=8000,drift_at=4000",
            "--label-delay",
            "10",
            "--report",
            str(report_path),
            "--out",
            str(tmp_path / "out"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(report_path.read_text())
    decisions = sorted(report["promotions"] + report["demotions"], key=lambda d: d["label_index"])
    kinds = [d["kind"] for d in decisions]
    assert kinds[:3] == ["promotion", "demotion", "promotion"], decisions
    demotion = decisions[1]
    # The drift is at event 4000 (label ~3990 with labels 10 events late): caught within 400.
    assert 3990 <= demotion["label_index"] <= 4400
    assert demotion["reason"].startswith("drift detected by ADWIN")
    assert report["drift"][0]["label_index"] == demotion["label_index"]
    assert report["mode"] == "serving"
    assert "drift detected at label" in proc.stdout
    pngs = list((tmp_path / "out").glob("*.png"))
    pages = list((tmp_path / "out").glob("*.html"))
    assert len(pngs) == 1 and len(pages) == 1
    assert png_size(pngs[0]) == (1200, 800)
    page = pages[0].read_text()
    assert "data:image/png;base64," in page and "drift" in page


def test_status_and_report_commands(make_config: Any, tmp_path: Path) -> None:
    cfg = make_config(
        {
            "fallback": {"default": False},
            "gating": {"min_labels": 50},
            "telemetry": {"status_every_seconds": 0.2},
            "evaluation": {"metric": "ROCAUC", "slice_by": "group"},
        }
    )
    publish_grouped_phishing(cfg, tmp_path)
    config_file = write_config(cfg, tmp_path / "c.yaml")
    env = {**os.environ, "RIVERLINE_CHECKPOINT_SECRET": TEST_SECRET}
    cli = [sys.executable, "-m", "pipeline.cli"]
    run = subprocess.run(
        [
            *cli,
            "run",
            "--config",
            str(config_file),
            "--until-idle",
            "2",
            "--report",
            str(tmp_path / "r.json"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    status = subprocess.run(
        [*cli, "status", "--config", str(config_file), "--explain"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    out = status.stdout
    assert "serving" in out and "windowed ROCAUC model vs fallback" in out
    assert "promotion" in out and "checkpoint" in out and "lag" in out
    assert "global weights" in out and "(intercept)" in out and "https" in out
    slices = json.loads((tmp_path / "r.json").read_text())["slices"]
    assert sorted(slices["slices"]) == ["a", "b"]
    for value in "ab":
        roles = slices["slices"][value]
        shown = " / ".join(f"{role} {roles[role]['ROCAUC']:.4f}" for role in roles)
        assert f"slice group={value} (ROCAUC)" in out and shown in out
    assert f"model {slices['gap']['model']:.4f}" in out
    made = subprocess.run(
        [*cli, "report", "--from-json", str(tmp_path / "r.json"), "--out", str(tmp_path / "rep")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    assert png_size(tmp_path / "rep" / "r-learning-curve.png") == (1200, 800)
    from_redis = subprocess.run(
        [*cli, "report", "--config", str(config_file), "--out", str(tmp_path / "rep2")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert from_redis.returncode == 0, from_redis.stderr
    assert (tmp_path / "rep2" / f"{cfg.name}-learning-curve.html").exists()


def test_replay_serves_its_own_metrics(make_config: Any, tmp_path: Path) -> None:
    cfg = make_config({"evaluation": {"metric": "Accuracy"}})
    source = tmp_path / "rows.jsonl"
    lines = [json.dumps({"id": str(i), "label": i % 2 == 0, "x": float(i)}) for i in range(150)]
    lines.insert(2, "{this line is not json")
    source.write_text("\n".join(lines) + "\n")
    port = free_port()
    proc = subprocess.Popen(
        [
            *[sys.executable, "-m", "pipeline.cli", "replay"],
            *["--config", str(write_config(cfg, tmp_path / "c.yaml"))],
            *["--source", str(source), "--on-error", "skip"],
            *["--speed", "40", "--label-delay", "5", "--metrics-port", str(port)],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[dict[Any, float]] = []
    while proc.poll() is None:
        with contextlib.suppress(OSError):  # not listening yet
            seen.append(scrape(port))
        time.sleep(0.2)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    said = out + err  # the summary goes to stderr, beside the progress bar
    assert "published 150 events and 150 labels" in said and "skipped 1 malformed rows" in said
    # Only the scrapes that hold the counter: one made as the process exits may be cut short.
    published = ("riverline_replay_published_total", (("kind", "event"),))
    events = [s[published] for s in seen if published in s]
    assert len(events) >= 5 and events == sorted(events) and 0 < events[-1] <= 150
    assert max(s.get(("riverline_replay_skipped_rows_total", ()), 0) for s in seen) == 1
    event_time = ("riverline_replay_event_time_seconds", ())
    assert [s[event_time] for s in seen if event_time in s][-1] > 0
