"""A challenger promoted by hand in the split roles: the learner publishes a model version whose
model is the challenger's, and the predictor serves with it (issue 21, "a promotion is a new
model version; the learner publishes it; predictors take it").

Real processes (the console script: ``learner``, ``predictor``, ``promote``) on the real broker
and Redis. The stream comes in two parts: events with labels (the champion learns and is
promoted over the fallback), then, after ``riverline promote``, events without labels, so that
no later version can stand in for the promotion's own.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from river import compose, datasets, tree

from pipeline.checkpointing.model_versions import ModelVersionStore
from pipeline.checkpointing.store import CheckpointStore
from pipeline.cli.status import predictor_statuses
from pipeline.config import RiverlineConfig
from pipeline.schemas import parse_event
from pipeline.serving.predictor_core import ServingCore
from pipeline.state.redis_client import connect
from producers.replay import replay
from producers.schedule import parse_delay
from producers.sources import SourceOptions
from tests.conftest import TEST_SECRET
from tests.integration.cli import cli_env, riverline
from tests.integration.helpers import read_topic, run_cli, wait_for, write_config

pytestmark = pytest.mark.integration

LEARNED = 500  # events with labels, learned before the promotion
SERVED = 150  # events without labels, served after it
CHALLENGED: dict[str, Any] = {
    "model": {
        "spec": "preprocessing.StandardScaler | linear_model.LogisticRegression",
        "challengers": [{"name": "tree", "spec": "tree.HoeffdingTreeClassifier(grace_period=50)"}],
    },
    "challengers": {"promote": "manual"},
    "evaluation": {"metric": "Accuracy", "extra_metrics": []},
    "fallback": {"default": False},
    "kafka": {"partitions": 2},
    "gating": {"min_labels": 100, "window": 100},
    "checkpoint": {"every_labels": 200, "every_seconds": 3600, "lease_ttl_ms": 2000},
    "serving": {"every_labels": 100, "every_seconds": 1.0, "keep": 100, "poll_seconds": 0.5},
    "telemetry": {"status_every_seconds": 0.5},
}


def _write_csv(path: Path, rows: list[tuple[int, dict[str, Any], Any]], labels: bool) -> Path:
    names = sorted(rows[0][1])
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "ts", *names, *(["label"] if labels else [])])
        for i, x, y in rows:
            cells = [f"e{i}", 1_700_000_000 + i, *(x[n] for n in names)]
            out.writerow([*cells, y] if labels else cells)
    return path


def _start(args: list[str], log: Path) -> subprocess.Popen[str]:
    # Logs to a file: a pipe nobody reads would block a chatty process.
    env = cli_env()
    return run_cli(args, env, stdout=log.open("w"), stderr=subprocess.STDOUT)  # type: ignore[no-any-return]


def _stop(proc: subprocess.Popen[str], log: Path) -> None:
    proc.send_signal(signal.SIGTERM)  # stops between records, checkpoints, exits 0
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"{proc.args} did not stop:\n{log.read_text()[-3000:]}") from None
    assert proc.returncode == 0, log.read_text()[-3000:]


def _served_version(cfg: RiverlineConfig) -> int | None:
    client = connect(cfg.redis.url)
    found = predictor_statuses(client, f"riverline:{cfg.name}:predictor:")
    return found[0].get("model_version") if found else None


def test_promote_by_hand_publishes_the_challengers_model_and_predictors_serve_it(
    make_config: Any, tmp_path: Path
) -> None:
    cfg = make_config(CHALLENGED)
    assert cfg.kafka.bootstrap is not None
    rows = [(i, x, y) for i, (x, y) in enumerate(datasets.Phishing())][: LEARNED + SERVED]
    first = _write_csv(tmp_path / "first.csv", rows[:LEARNED], labels=True)
    then = _write_csv(tmp_path / "then.csv", rows[LEARNED:], labels=False)
    config = str(write_config(cfg, tmp_path / "split.yaml"))
    common = ["--config", config, "--until-idle", "600"]  # stopped by SIGTERM below
    learner = _start(["learner", *common, "--report", str(tmp_path / "l.json")], tmp_path / "l.log")
    predictor = _start(["predictor", *common], tmp_path / "p.log")
    models = ModelVersionStore(
        connect(cfg.redis.url), cfg.name, TEST_SECRET.encode(), 100, insecure=False
    )
    try:
        replay(cfg, cfg.kafka.bootstrap, str(first), parse_delay("20"))
        wait_for(lambda: models.latest_version() == LEARNED, 120, "every label learned")
        wait_for(lambda: _served_version(cfg) == LEARNED, 60, "the predictor on that version")
        before = models.load(LEARNED)
        assert before.mode == "serving", "the champion was promoted over the fallback"
        assert isinstance(before.model, compose.Pipeline)  # the champion's

        asked = riverline(["promote", "tree", "--config", config, "--wait", "60"], cli_env())
        assert asked.returncode == 0, asked.stderr
        assert "challenger 'tree' promoted over 'model'" in asked.stdout
        # A new version at once, though nothing more was learned: the challenger's model.
        promoted = models.latest_version()
        assert promoted is not None and promoted > LEARNED
        after = models.load(promoted)
        assert isinstance(after.model, tree.HoeffdingTreeClassifier)
        assert after.mode == "serving" and after.meta()["fallback_digest"] == before.fallback_digest
        wait_for(lambda: _served_version(cfg) == promoted, 60, "the predictor taking it")

        replay(cfg, cfg.kafka.bootstrap, str(then), None, options=SourceOptions(label_column=None))
        later = {f"e{i}" for i, _, _ in rows[LEARNED:]}

        def all_served() -> bool:
            records = read_topic(cfg.kafka.bootstrap or "", cfg.kafka.topics.predictions, 1.0)
            return later <= {json.loads(r.value)["id"] for r in records}

        wait_for(all_served, 120, "predictions of the events after the promotion")
    finally:
        for proc, log in ((predictor, tmp_path / "p.log"), (learner, tmp_path / "l.log")):
            if proc.poll() is None:
                _stop(proc, log)
    assert "model version" in (tmp_path / "l.log").read_text()

    # Every event after the promotion was served by the challenger's model, in that version,
    # byte for byte as the version serves it.
    core = ServingCore(cfg, after)
    records = read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.events)
    events = {e.id: e for e in (parse_event(r.value) for r in records)}
    served = [
        r
        for r in read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.predictions)
        if json.loads(r.value)["id"] in later
    ]
    assert len(served) == SERVED
    for record in served:
        published = json.loads(record.value)
        assert published["model_version"] == promoted
        assert core.on_event(events[published["id"]]).prediction_json() == record.value
    assert {json.loads(r.value)["source"] for r in served} == {"model"}

    # The learner's own state agrees: the tree is the champion, the old one a challenger, and
    # the published model answers as the learner's model does.
    report = json.loads((tmp_path / "l.json").read_text())
    board = report["challengers"]
    assert [(r["name"], r["role"]) for r in board["leaderboard"]] == [
        ("tree", "champion"),
        ("model", "challenger"),
    ]
    assert report["model_version"] == promoted
    store = CheckpointStore(connect(cfg.redis.url), cfg.name, TEST_SECRET.encode())
    latest = store.latest_version()
    assert latest is not None
    model = store.load(latest).state.model
    for event in list(events.values())[-20:]:
        assert after.model.predict_proba_one(event.features) == model.predict_proba_one(
            event.features
        )
