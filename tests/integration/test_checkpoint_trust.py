"""Checkpoints are pickles: every command that unpickles one refuses an unverified one.

Each case plants a checkpoint whose pickle would create a file when loaded, then runs the real
console script against it: the command is refused (exit 1), and the file does not exist.
"""

from __future__ import annotations

import pickle
import zlib
from pathlib import Path
from typing import Any

import pytest

from pipeline.checkpointing.store import CheckpointStore
from pipeline.core import LearningCore
from pipeline.state.redis_client import connect
from tests.conftest import TEST_SECRET
from tests.integration.cli import assert_one_error, cli_env, riverline, riverline_all
from tests.integration.helpers import write_config

pytestmark = pytest.mark.integration


class CreatesFile:
    """Unpickling this opens (so creates) a file: the stand-in for an attacker's payload."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def meta(cfg: Any) -> dict[str, Any]:
    return {
        "reason": "test",
        "events": 0,
        "labels": 0,
        "mode": "cold",
        "model": cfg.model.spec,
        "metric": cfg.evaluation.metric,
    }


def good_checkpoint(cfg: Any, secret: bytes | None = TEST_SECRET.encode()) -> int:
    store = CheckpointStore(connect(cfg.redis.url), cfg.name, secret)
    return store.save(LearningCore.from_config(cfg).state, {}, meta(cfg))


def plant(cfg: Any, kind: str, payload: Path) -> int:
    """A checkpoint that runs ``payload`` if unpickled: ``tampered`` or ``unsigned``."""
    client = connect(cfg.redis.url)
    if kind == "unsigned":
        return CheckpointStore(client, cfg.name, None).save(CreatesFile(payload), {}, meta(cfg))
    # A signed checkpoint whose blob was replaced in Redis afterwards.
    version = good_checkpoint(cfg)
    evil = zlib.compress(pickle.dumps(CreatesFile(payload)))
    client.hset(f"riverline:{cfg.name}:ckpt:{version}", "blob", evil)
    return version


CASES = {
    # kind of checkpoint, whether the command has the secret, what the refusal says
    "tampered": ("tampered", True, "failed its signature check"),
    "unsigned": ("unsigned", True, "is not signed"),
    "unsigned-no-secret": ("unsigned", False, "no checkpoint secret is set"),
}


@pytest.mark.parametrize("case", CASES)
def test_inspection_commands_refuse_an_unverified_checkpoint(
    case: str, make_config: Any, tmp_path: Path
) -> None:
    kind, with_secret, refusal = CASES[case]
    cfg = make_config({"fallback": {"default": False}})
    first = good_checkpoint(cfg)
    payload = tmp_path / "pwned"
    bad = plant(cfg, kind, payload)
    store = CheckpointStore(connect(cfg.redis.url), cfg.name, TEST_SECRET.encode())
    config = str(write_config(cfg, tmp_path / "c.yaml"))
    env = cli_env(TEST_SECRET if with_secret else None)
    common = ["--config", config]
    results = riverline_all(
        [
            ["status", "--explain", *common],
            ["report", "--out", str(tmp_path / "out"), *common],
            ["checkpoint", "show", str(bad), *common],
        ],
        env,
    )
    for result in results:
        assert_one_error(result, 1, f"ckpt:{bad}", refusal, "refusing to load it")
        assert "not checked" not in result.stdout
    assert not payload.exists()
    assert not (tmp_path / "out").exists()

    # Rollback to it is refused too, and the latest stays where it was.
    store.rollback(first)
    result = riverline(["checkpoint", "rollback", str(bad), *common], env)
    assert_one_error(result, 1, f"ckpt:{bad}", refusal)
    assert store.latest_version() == first

    # Commands that need only metadata read it without unpickling anything.
    store.client.set(store.key("ckpt:latest"), bad)
    listed, status = riverline_all([["checkpoint", "list", *common], ["status", *common]], env)
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr
    assert not payload.exists()


@pytest.mark.parametrize("kind", ["tampered", "unsigned"])
def test_run_refuses_releases_the_lease_and_rollback_works_at_once(
    kind: str, make_config: Any, tmp_path: Path
) -> None:
    cfg = make_config({"fallback": {"default": False}})
    first = good_checkpoint(cfg)
    payload = tmp_path / "pwned"
    bad = plant(cfg, kind, payload)
    config = str(write_config(cfg, tmp_path / "c.yaml"))
    env = cli_env()
    result = riverline(["run", "--config", config, "--until-idle", "1"], env)
    assert_one_error(result, 1, f"ckpt:{bad}", "refusing to load it")
    assert not payload.exists()
    client = connect(cfg.redis.url)
    assert client.get(f"riverline:{cfg.name}:lease") is None  # released, not left to expire
    result = riverline(["checkpoint", "rollback", str(first), "--config", config], env)
    assert result.returncode == 0, result.stderr
    assert f"is now version {first}" in result.stderr


def test_run_without_a_secret_refuses_to_start(make_config: Any, tmp_path: Path) -> None:
    cfg = make_config()
    payload = tmp_path / "pwned"
    plant(cfg, "unsigned", payload)
    config = str(write_config(cfg, tmp_path / "c.yaml"))
    result = riverline(["run", "--config", config, "--until-idle", "1"], cli_env(None))
    assert_one_error(result, 2, "checkpoint.secret")
    assert not payload.exists()


def test_show_says_how_it_checked(make_config: Any, tmp_path: Path) -> None:
    signed = make_config()
    version = good_checkpoint(signed)
    result = riverline(
        ["checkpoint", "show", str(version), "--config", str(write_config(signed, tmp_path / "s"))],
        cli_env(),
    )
    assert result.returncode == 0, result.stderr
    assert '"signature": "verified"' in result.stdout

    trusted = make_config({"checkpoint": {"insecure": True}}, name=signed.name + "-insecure")
    version = good_checkpoint(trusted, secret=None)
    config = str(write_config(trusted, tmp_path / "i"))
    result = riverline(["checkpoint", "show", str(version), "--config", config], cli_env(None))
    assert result.returncode == 0, result.stderr
    assert '"signature": "not checked (checkpoint.insecure: true)"' in result.stdout


def test_a_pinned_version_outlives_keep(make_config: Any) -> None:
    cfg = make_config()
    store = CheckpointStore(connect(cfg.redis.url), cfg.name, TEST_SECRET.encode(), keep=1)
    first = store.save({"n": 1}, {})
    store.pin(first)
    for n in range(3):
        store.save({"n": n + 2}, {})
    assert store.versions() == [first, first + 3]
    assert store.load(first).state == {"n": 1}


def test_another_model_or_metric_is_refused_unless_reset(make_config: Any, tmp_path: Path) -> None:
    cfg = make_config({"fallback": {"default": False}})
    old = good_checkpoint(cfg)
    config = str(write_config(cfg, tmp_path / "c.yaml"))
    env = cli_env()
    client = connect(cfg.redis.url)
    lease = f"riverline:{cfg.name}:lease"
    tree = "tree.HoeffdingTreeClassifier"
    result = riverline(["run", "--config", config, "--model", tree, "--until-idle", "1"], env)
    message = assert_one_error(result, 2, "model.spec", tree, cfg.model.spec, "--name", "--reset")
    assert f"version {old}" in message
    assert client.get(lease) is None
    result = riverline(["run", "--config", config, "--metric", "F1", "--until-idle", "1"], env)
    assert_one_error(result, 2, "evaluation.metric", "'F1'", "--reset")
    assert client.get(lease) is None

    result = riverline(
        ["run", "--config", config, "--model", tree, "--reset", "--until-idle", "1"], env
    )
    assert result.returncode == 0, result.stderr
    assert "--reset" in result.stderr and f"rollback {old}" in result.stderr
    store = CheckpointStore(client, cfg.name, TEST_SECRET.encode())
    latest = store.latest_version()
    assert latest is not None and latest > old
    assert (store.meta(latest) or {})["model"] == tree
    assert old in store.versions() and old in store.pinned()
    listed = riverline(["checkpoint", "list", "--config", config], env)
    assert "pinned" in listed.stdout
    # The new model resumes without --reset now; the old state is one rollback away.
    result = riverline(["run", "--config", config, "--model", tree, "--until-idle", "1"], env)
    assert result.returncode == 0, result.stderr
    result = riverline(["checkpoint", "rollback", str(old), "--config", config], env)
    assert result.returncode == 0, result.stderr
