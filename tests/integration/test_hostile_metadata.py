"""Whoever can write Redis chooses the bytes of every field: a hostile one is refused, not fatal.

One shared setup per kind of hostile signature (non-ASCII text, invalid UTF-8) plants it on the
latest checkpoint and the latest model version, an unparseable ``meta`` on an older checkpoint,
and the same bytes as the pipeline's status and a predictor's; then every command a user would
run against that pipeline is run as the console script. Each refuses what it cannot verify
with one ``error:`` line and no traceback; the listing commands still list; a predictor serves
the newest version it can verify.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest

from pipeline.checkpointing.model_versions import ModelVersionStore
from pipeline.checkpointing.store import CheckpointStore
from pipeline.state.redis_client import connect
from tests.conftest import TEST_SECRET, Backends, build_test_config, delete_pipelines
from tests.integration.cli import assert_one_error, cli_env, riverline_all
from tests.integration.helpers import json_values, publish, read_topic, write_config
from tests.integration.test_checkpoint_trust import meta
from tests.integration.test_model_versions import Learner, learner_config

pytestmark = pytest.mark.integration

SECRET = TEST_SECRET.encode()
HOSTILE = {
    # What the issue found: text past ASCII made hmac.compare_digest raise TypeError.
    "non-ascii": ("é" * 64).encode(),
    # And bytes that are not UTF-8 at all made the decode before it raise.
    "invalid-utf8": b"\xff\xfe" * 32,
}
EVENTS = 40


@dataclass
class Planted:
    tmp: Path
    checkpoint: int  # latest, its sig hostile
    unreadable: int  # an older one whose meta is not JSON
    good_model: int
    bad_model: int  # latest, its sig hostile
    results: dict[str, CompletedProcess[str]]
    predictions: list[dict[str, Any]]
    event_ids: set[str]


@pytest.fixture(scope="module", params=list(HOSTILE))
def planted(
    request: pytest.FixtureRequest, backends: Backends, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Planted]:
    hostile = HOSTILE[request.param]
    tmp = tmp_path_factory.mktemp(request.param)
    name = f"test-hostile-{request.param}-{tmp.name[-6:]}"

    def make_config(overrides: dict[str, Any] | None = None) -> Any:
        return build_test_config(backends, name, overrides)

    cfg = learner_config(make_config)
    client = connect(cfg.redis.url)
    try:
        checkpoints = CheckpointStore(client, cfg.name, SECRET)
        learner = Learner(cfg)
        checkpoints.save(learner.core.state, {}, meta(cfg))
        unreadable = checkpoints.save(learner.core.state, {}, meta(cfg))
        client.hset(checkpoints.key(f"ckpt:{unreadable}"), "meta", b"\xff{not json")
        checkpoint = checkpoints.save(learner.core.state, {}, meta(cfg))
        client.hset(checkpoints.key(f"ckpt:{checkpoint}"), "sig", hostile)

        models = ModelVersionStore(client, cfg.name, SECRET, keep=10)
        learner.learn(10)
        good_model = models.publish(learner.snapshot())
        learner.learn(10)
        bad_model = models.publish(learner.snapshot())
        client.hset(models.key(f"model:{bad_model}"), "sig", hostile)
        # The status a writer publishes and a predictor's, as unreadable as the signature.
        client.set(checkpoints.key("status"), hostile)
        client.set(checkpoints.key("predictor:planted"), hostile, ex=600)

        publish(cfg, "river:Bananas", "5", limit=EVENTS)
        config = str(write_config(cfg, tmp / "c.yaml"))
        common = ["--config", config]
        commands = {
            "learner": ["learner", *common, "--until-idle", "1"],
            "checkpoint show": ["checkpoint", "show", str(checkpoint), *common],
            "report": ["report", "--out", str(tmp / "out"), *common],
            "status --explain": ["status", "--explain", *common],
            "rollback": ["checkpoint", "rollback", str(checkpoint), *common],
            "model show": ["model", "show", str(bad_model), *common],
            "model show --load": ["model", "show", str(bad_model), "--load", *common],
            "checkpoint list": ["checkpoint", "list", *common],
            "model list": ["model", "list", *common],
            "status": ["status", *common],
            "predictor": ["predictor", *common, "--until-idle", "2"],
        }
        done = riverline_all(list(commands.values()), cli_env())
        assert cfg.kafka.bootstrap is not None
        predictions = json_values(read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.predictions))
        events = json_values(read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.events))
        yield Planted(
            tmp,
            checkpoint,
            unreadable,
            good_model,
            bad_model,
            dict(zip(commands, done, strict=True)),
            predictions,
            {e["id"] for e in events},
        )
    finally:
        client.close()
        delete_pipelines(backends, {name})


REFUSED = ["learner", "checkpoint show", "report", "status --explain", "rollback"]


@pytest.mark.parametrize("command", REFUSED)
def test_commands_that_load_the_checkpoint_refuse_it(planted: Planted, command: str) -> None:
    assert_one_error(
        planted.results[command],
        1,
        f"ckpt:{planted.checkpoint}",
        "failed its signature check",
        "refusing to load it",
    )
    assert not (planted.tmp / "out").exists()


@pytest.mark.parametrize("command", ["model show", "model show --load"])
def test_model_show_refuses_the_version(planted: Planted, command: str) -> None:
    assert_one_error(
        planted.results[command], 1, f"model:{planted.bad_model}", "failed its signature check"
    )


@pytest.mark.parametrize("command", ["checkpoint list", "model list", "status"])
def test_metadata_commands_still_answer(planted: Planted, command: str) -> None:
    result = planted.results[command]
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    if command == "checkpoint list":
        row = next(line for line in result.stdout.splitlines() if f" {planted.unreadable} " in line)
        assert "unreadable metadata" in row


def test_the_predictor_serves_the_newest_verified_version(planted: Planted) -> None:
    result = planted.results["predictor"]
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert f"model version {planted.bad_model} not taken" in result.stderr
    assert "failed its signature check" in result.stderr
    # Every event answered; none by the refused version; the verified one did serve.
    assert {p["id"] for p in planted.predictions} == planted.event_ids
    assert len(planted.event_ids) == EVENTS
    versions = {p["model_version"] for p in planted.predictions}
    assert planted.bad_model not in versions
    assert planted.good_model in versions
