"""``riverline explain`` of an event served by an older model version, and sampled explanations
across a restart (issue 20, "recomputed from the checkpointed model of that version where
kept"; the explainer's background is in the checkpointed state). Real broker and Redis."""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path
from typing import Any

import pytest
from river import datasets

from pipeline.checkpointing.store import CRASH_ENV
from tests.integration.cli import cli_env, riverline, riverline_all
from tests.integration.helpers import (
    consume,
    json_values,
    publish,
    read_topic,
    run_cli,
    write_config,
)

pytestmark = pytest.mark.integration

PART = 300  # events (with their labels) per part: run once over each
ROWS = [(i, x, y) for i, (x, y) in enumerate(datasets.Phishing())][: 2 * PART]
EXPLAINED: dict[str, Any] = {
    "evaluation": {"metric": "Accuracy"},
    "fallback": {"default": False},
    "gating": {"min_labels": 50, "window": 50},
    # Only the final checkpoint of each run, all kept: the first run's holds model version PART.
    "checkpoint": {"every_labels": 100_000, "every_seconds": 3600, "keep": 50},
}


def _write_csv(path: Path, rows: list[tuple[int, dict[str, Any], Any]]) -> str:
    names = sorted(rows[0][1])
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "ts", *names, "label"])
        for i, x, y in rows:
            out.writerow([f"e{i}", 1_700_000_000 + i, *(x[n] for n in names), y])
    return str(path)


def test_explain_recomputes_with_the_model_of_an_older_kept_version(
    make_config: Any, tmp_path: Path
) -> None:
    cfg = make_config(
        {
            **EXPLAINED,
            "model": {"spec": "preprocessing.StandardScaler | linear_model.LogisticRegression"},
            "explain": {"enabled": True, "top_k": 5},
        }
    )
    assert cfg.kafka.bootstrap is not None
    config = str(write_config(cfg, tmp_path / "run.yaml"))
    env = cli_env()
    for part, rows in enumerate((ROWS[:PART], ROWS[PART:])):
        publish(cfg, _write_csv(tmp_path / f"part{part}.csv", rows), "20")
        done = riverline(["run", "--config", config, "--until-idle", "2"], env, timeout=300)
        assert done.returncode == 0, done.stderr
    predictions = {
        p["id"]: p
        for p in json_values(read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.predictions))
    }
    # The first event of the second part was served by the model of the first run's end.
    then = predictions[f"e{PART}"]
    assert then["source"] == "model" and then["model_version"] == PART, then
    assert then["explanation"]
    features = {k: v for k, v in ROWS[PART][1].items() if v is not None}
    common = ["explain", "--config", config, "--json"]
    recomputed, current, newest = riverline_all(
        [
            [*common, "--id", f"e{PART}", "--recompute"],
            [*common, "--features", json.dumps(features)],
            [*common, "--id", f"e{2 * PART - 1}", "--recompute"],
        ],
        env,
        timeout=300,  # each scans the topics: slow on a loaded machine
    )
    for result in (recomputed, current, newest):
        assert result.returncode == 0, result.stderr
    shown = json.loads(recomputed.stdout)
    assert shown["explained_from"] == "recomputed"
    assert shown["model"].startswith("checkpoint ") and f"(model version {PART})" in shown["model"]
    # That version's model's explanation, to the last digit, and its answer.
    assert shown["explanation"] == then["explanation"]
    assert shown["model_prediction"] == then["prediction"]
    assert shown["model_confidence"] == then["confidence"]
    # The current model (it learned PART more labels) explains the same event otherwise.
    now = json.loads(current.stdout)
    assert f"(model version {2 * PART})" in now["model"]
    assert now["explanation"] != then["explanation"]
    # A version no checkpoint holds: the current model, and said so.
    last = json.loads(newest.stdout)
    assert "is no longer kept: the current one" in last["model"], last["model"]


def test_sampled_explanations_survive_a_restart(make_config: Any, tmp_path: Path) -> None:
    """A run killed inside a checkpoint and started again explains every prediction (sampled,
    against its background of recent events, one in ``every``) as a run that never stopped:
    the predictions it publishes again from the checkpoint before are the same."""
    sampled: dict[str, Any] = {
        **EXPLAINED,
        # Not a KNN: its ties between equally near neighbours fall by set order, which differs
        # from process to process (PYTHONHASHSEED), restarted or not.
        "model": {"spec": "naive_bayes.GaussianNB"},
        "explain": {"enabled": True, "samples": 32, "background": 8, "every": 2},
        "checkpoint": {"every_labels": 100, "every_seconds": 3600, "keep": 50},
    }
    restarted = make_config(sampled)
    topics = restarted.kafka.topics
    name = f"{restarted.name}-whole"
    whole = make_config(
        {**sampled, "kafka": {"topics": {"events": topics.events, "labels": topics.labels}}},
        name=name,
    )
    assert whole.kafka.topics.predictions == f"{name}.predictions"  # outputs of its own
    publish(restarted, _write_csv(tmp_path / "all.csv", ROWS), "20")
    config = str(write_config(restarted, tmp_path / "run.yaml"))
    args = ["run", "--config", config, "--until-idle", "2"]
    # Killed inside its third checkpoint (300 labels): resumed from the second (200 labels).
    crash = run_cli(args, {**cli_env(), CRASH_ENV: "3"})
    crash.communicate(timeout=300)
    assert crash.returncode == -signal.SIGKILL
    again = riverline(args, cli_env(), timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resuming from checkpoint" in again.stderr
    consume(whole)
    assert restarted.kafka.bootstrap is not None

    def served(cfg: Any) -> dict[str, Any]:
        records = read_topic(restarted.kafka.bootstrap or "", cfg.kafka.topics.predictions)
        # The last of each id (the killed run's uncommitted ones come first); all but the
        # pipeline's name, stamped on each.
        return {p["id"]: {**p, "pipeline": None} for p in json_values(records)}

    once, twice = served(whole), served(restarted)
    assert len(once) == len(twice) == 2 * PART
    differ = [
        (i, k, once[i][k], twice[i][k]) for i in once for k in once[i] if once[i][k] != twice[i][k]
    ]
    assert not differ, differ[:3]
    explained = [p for p in once.values() if p["explanation"] and p["model_version"] >= 200]
    assert len(explained) >= PART // 4, "the model served and was explained after the restart"
    assert {p["explanation"][-1]["method"] for p in explained} == {"sampled"}
