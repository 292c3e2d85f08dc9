"""`riverline review` in the terminal, as a subprocess fed on stdin, against a real topic."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline.state.redis_client import connect
from tests.integration.helpers import json_values, read_topic, write_config
from tests.integration.review_support import human_labels, make_request, publish_requests

pytestmark = pytest.mark.integration


def _review(config_file: Path, backends: Any, stdin: str, *extra: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERLINE_")}
    env.update(RIVERLINE_REDIS_URL=backends.redis, RIVERLINE_KAFKA_BOOTSTRAP=backends.kafka)
    args = ["review", "--config", str(config_file), "--reviewer", "tess", *extra]
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_terminal_reviewer_answers_skips_and_is_asked_again_on_a_wrong_answer(
    make_config: Any, backends: Any, tmp_path: Path
) -> None:
    cfg = make_config()
    publish_requests(
        cfg,
        [
            make_request(cfg, "t1"),
            make_request(cfg, "t2"),
            make_request(cfg, "t3", classes=["ham", "spam"]),
            make_request(cfg, "t4", task="regression"),
        ],
    )
    config_file = write_config(cfg, tmp_path / "review.yaml")
    # t1: class 2 (true); t2: skip; t3: "maybe" is no class, then "spam" by name; t4: a number.
    done = _review(config_file, backends, "2\ns\nmaybe\nspam\n7.5\n", "--exit-when-empty")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "request t1" in out and "url_length" in out and "model v41" in out
    assert "rules (heuristic)" in out and "1=false  2=true  s=skip  q=quit" in out
    # Why: the model's top contributions, the rule that fired, the nearest labelled events.
    assert "why: has_ip" in out and "= true: +0.210" in out and "why: url_length" in out
    assert "rule" in out and "has_ip == true" in out
    assert (
        "similar: false" in out and "distance 0.125 · n7 · differs: domain = paypal.example" in out
    )
    assert "'maybe' is not one of the classes: ham, spam" in out
    assert "the queue is empty" in out
    assert "tess: 3 answered this session" in done.stderr
    labels = json_values(human_labels(cfg, 3))
    assert [(x["id"], x["label"], x["source"], x["reviewer"]) for x in labels] == [
        ("t1", True, "human", "tess"),
        ("t3", "spam", "human", "tess"),
        ("t4", 7.5, "human", "tess"),
    ]
    client = connect(cfg.redis.url)
    assert client.hget(f"riverline:{cfg.name}:review:skips", "tess") == b"1"
    assert client.hget(f"riverline:{cfg.name}:review:answers", "tess") == b"3"


def test_q_quits_without_answering(make_config: Any, backends: Any, tmp_path: Path) -> None:
    cfg = make_config()
    publish_requests(cfg, [make_request(cfg, "q1")])
    config_file = write_config(cfg, tmp_path / "review.yaml")
    done = _review(config_file, backends, "q\n")
    assert done.returncode == 0, done.stderr
    assert "request q1" in done.stdout
    assert "tess: 0 answered this session" in done.stderr
    assert read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.labels, timeout_s=1.0) == []
