"""Challengers through the broker: ``run`` killed mid-checkpoint (twice) ends with the same
state as the uninterrupted in-process run (``compare``'s), the challenger's takeover included."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from pipeline.checkpointing.store import CRASH_ENV
from pipeline.compare import simulate
from producers.schedule import parse_delay
from producers.sources import SourceOptions, open_source
from tests.conftest import TEST_SECRET
from tests.integration.cli import cli_env, finish, riverline, start
from tests.integration.helpers import (
    crash_then_resume,
    learning_state,
    publish,
    run_cli,
    write_config,
)

pytestmark = pytest.mark.integration

CHALLENGED = {
    "model": {
        "spec": "dummy.PriorClassifier",
        "challengers": [{"name": "tree", "spec": "tree.HoeffdingTreeClassifier(grace_period=50)"}],
    },
    "challengers": {"promote": "auto"},
    "evaluation": {"metric": "Accuracy"},
    "fallback": {"default": False},
    # Short lease and session: a killed writer's are waited out before the next run starts.
    "kafka": {"partitions": 2, "session_timeout_ms": 2000, "heartbeat_interval_ms": 500},
    "gating": {"min_labels": 50, "window": 100, "margin": 0.05},
    "checkpoint": {"every_labels": 40, "every_seconds": 3600, "keep": 50, "lease_ttl_ms": 2000},
}


def test_sigkill_with_challengers_equals_an_uninterrupted_run(
    make_config: Any, tmp_path: Path
) -> None:
    cfg = make_config(CHALLENGED)
    publish(cfg, "river:Bananas", "30", limit=1500)
    reference = simulate(
        cfg, open_source("river:Bananas", SourceOptions(limit=1500)), parse_delay("30")
    )
    board = reference["challengers"]
    taken_at = board["promotions"][0]["label_index"]
    # The runs below are killed inside their third checkpoint write: the first at 120 labels
    # (it resumes from 80), the second at 200 (it resumes from 160). The takeover falls in
    # between: made, lost with the kill, and made again by the resumed run.
    assert 160 < taken_at < 200

    config_file = write_config(cfg, tmp_path / "run.yaml")
    env = {**os.environ, "RIVERLINE_CHECKPOINT_SECRET": TEST_SECRET}
    args = ["run", "--config", str(config_file), "--until-idle", "2"]
    resumed = crash_then_resume(config_file, env, tmp_path / "final.json", crashes=2, idle="2")
    assert resumed["challengers"]["leaderboard"][0]["name"] == "tree"
    assert learning_state(resumed) == learning_state(json.loads(json.dumps(reference)))
    # Started again on the state after the takeover: resumed as it is, nothing refused.
    again = run_cli([*args, "--report", str(tmp_path / "again.json")], env)
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    after = json.loads((tmp_path / "again.json").read_text())
    assert learning_state(after) == learning_state(resumed)


def test_promote_by_hand_survives_a_kill_between_its_checkpoints(
    make_config: Any, tmp_path: Path
) -> None:
    """``riverline promote`` on a running pipeline: an unknown name is refused; a known one is
    applied between two checkpoints. Killed inside the second write, the next start resumes
    from the first with the request still there, and promotes once."""
    checkpoint = {**CHALLENGED["checkpoint"], "every_labels": 100_000}  # only the promotion's
    cfg = make_config(
        {**CHALLENGED, "challengers": {"promote": "manual"}, "checkpoint": checkpoint}
    )
    publish(cfg, "river:Bananas", "30", limit=1500)
    config_file = str(write_config(cfg, tmp_path / "run.yaml"))
    env = cli_env()
    # Idle long enough for the request to come: its two checkpoints are this run's first two.
    killed = run_cli(
        ["run", "--config", config_file, "--until-idle", "60"], {**env, CRASH_ENV: "2"}
    )
    refused = riverline(["promote", "forest", "--config", config_file, "--wait", "60"], env)
    assert refused.returncode == 1  # refused without a checkpoint: the kill below stays put
    assert "no challenger 'forest' (the challengers: 'tree')" in refused.stderr
    asked = start(["promote", "tree", "--config", config_file, "--wait", "120"], env)
    killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL
    report = tmp_path / "final.json"
    again = run_cli(
        ["run", "--config", config_file, "--until-idle", "4", "--report", str(report)], env
    )
    answered = finish(asked, timeout=120)
    _, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr
    assert answered.returncode == 0, answered.stderr
    assert "challenger 'tree' promoted over 'model'" in answered.stdout
    board = json.loads(report.read_text())["challengers"]
    assert len(board["promotions"]) == 1  # made again after the kill, and only once
    assert [(r["name"], r["role"]) for r in board["leaderboard"]] == [
        ("tree", "champion"),
        ("model", "challenger"),
    ]
    shown = riverline(["status", "--config", config_file], env)
    assert shown.returncode == 0, shown.stderr
    assert "champion tree" in shown.stdout and "challenger model" in shown.stdout
