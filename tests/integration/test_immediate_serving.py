"""``ordering.serve: immediate`` on the real broker and Redis: events are served at fetch, and
learning, metrics and checkpoints are exactly those of ordered serving, crash or no crash."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_SECRET
from tests.integration.helpers import (
    consume,
    crash_then_resume,
    json_values,
    learning_state,
    publish,
    read_topic,
    write_config,
)

pytestmark = pytest.mark.integration

MODEL = {
    "model": {"spec": "preprocessing.StandardScaler | linear_model.LogisticRegression"},
    "evaluation": {"metric": "Accuracy", "extra_metrics": ["LogLoss"]},
    "fallback": {"default": False},
    "gating": {"min_labels": 50, "window": 100},
    "checkpoint": {"every_labels": 100, "every_seconds": 3600, "lease_ttl_ms": 2000},
}
IMMEDIATE = {**MODEL, "ordering": {"serve": "immediate"}}
EVENTS = 1500


def served_ids(cfg: Any) -> list[str]:
    assert cfg.kafka.bootstrap is not None
    return [
        p["id"] for p in json_values(read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.predictions))
    ]


def test_immediate_serving_learns_as_ordered_and_serves_every_event_once(
    make_config: Any,
) -> None:
    ordered = make_config(MODEL, name=f"test-ord-{uuid.uuid4().hex[:8]}")
    immediate = make_config(IMMEDIATE)
    for cfg in (ordered, immediate):
        assert publish(cfg, "river:Bananas", "30", limit=EVENTS).events == EVENTS
    reference = consume(ordered)
    report = consume(immediate)
    assert report["events"] == report["labels"] == EVENTS
    # Learning, the three-way metrics and the gating decisions: the same, to the last bit.
    assert learning_state(report) == learning_state(reference)
    ids = served_ids(immediate)
    assert sorted(ids) == sorted(served_ids(ordered)) and len(ids) == EVENTS == len(set(ids))


def test_immediate_serving_after_a_crash_mid_checkpoint_learns_nothing_twice(
    make_config: Any, tmp_path: Path
) -> None:
    ordered = make_config(MODEL, name=f"test-ord-{uuid.uuid4().hex[:8]}")
    immediate = make_config(IMMEDIATE)
    for cfg in (ordered, immediate):
        publish(cfg, "river:Bananas", "30", limit=EVENTS)
    reference = consume(ordered)
    config_file = write_config(immediate, tmp_path / "run.yaml")
    env = {**os.environ, "RIVERLINE_CHECKPOINT_SECRET": TEST_SECRET}
    resumed = crash_then_resume(config_file, env, tmp_path / "final.json")
    assert learning_state(resumed) == learning_state(reference)
    # Every event served; those after the last checkpoint maybe twice (at-least-once).
    ids = served_ids(immediate)
    assert set(ids) == set(served_ids(ordered)) and len(ids) >= EVENTS
