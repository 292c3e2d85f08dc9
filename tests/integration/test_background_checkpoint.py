"""Checkpoints written by a forked child (``checkpoint.background``): used, exact, retried.

The SIGKILL cases of test_exactly_once run with background writes too (the default); these
tests pin what is particular to them: the event path forks and goes on, a child's failure is
retried like a Redis error, a fenced child stops the writer, and a writer SIGKILLed while its
child writes recovers to the state of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumers.checkpointer import Checkpointer
from pipeline.checkpointing.background import FAIL_ENV
from pipeline.checkpointing.store import CheckpointStore, Fenced
from pipeline.config import load_config
from pipeline.kafka.transport import confluent_installed
from pipeline.state.redis_client import connect
from tests.conftest import TEST_SECRET, Backends, build_test_config, delete_pipelines
from tests.integration.helpers import consume, learning_state, publish, run_cli, write_config
from tests.integration.test_exactly_once import SLOW_MODEL, Reference, probe_predictions

pytestmark = pytest.mark.integration

EVERY = SLOW_MODEL["checkpoint"]["every_labels"]  # type: ignore[index]


def with_background(on: bool, **checkpoint: Any) -> dict[str, Any]:
    return {
        **SLOW_MODEL,
        "checkpoint": {**SLOW_MODEL["checkpoint"], "background": on, **checkpoint},  # type: ignore[dict-item]
    }


@pytest.fixture(scope="module")
def synchronous(backends: Backends) -> Iterator[Reference]:
    """One uninterrupted run with synchronous checkpoints: what the background runs must equal."""
    name = f"test-syncref-{uuid.uuid4().hex[:10]}"
    cfg = build_test_config(backends, name, with_background(False))
    try:
        publish(cfg, "river:Bananas", "30")
        report = consume(cfg)
        assert report["run"]["latency_ms"]["checkpoint_fork"]["count"] == 0  # none forked
        store = CheckpointStore(connect(cfg.redis.url), cfg.name, TEST_SECRET.encode())
        yield Reference(report, probe_predictions(cfg, store))
    finally:
        delete_pipelines(backends, {name})


def test_a_failed_background_write_is_retried_and_the_run_stays_exact(
    make_config: Any, synchronous: Reference, monkeypatch: pytest.MonkeyPatch
) -> None:
    # confluent-kafka where installed: its writes are held until the outputs are acknowledged
    # (kafka-python's flush first). Every version kept: all are read.
    client = "confluent" if confluent_installed() else "kafka-python"
    kafka = {**SLOW_MODEL["kafka"], "client": client}  # type: ignore[dict-item]
    cfg = make_config({**with_background(True, keep=1000), "kafka": kafka})
    total = publish(cfg, "river:Bananas", "30").labels
    monkeypatch.setenv(FAIL_ENV, "2")  # the second child fails as if Redis were unreachable
    report = consume(cfg)
    run = report["run"]
    assert run["latency_ms"]["checkpoint_fork"]["count"] >= 3  # written from forked children
    # Each held until the outputs before its snapshot were acknowledged, then let go.
    held = run["latency_ms"]["checkpoint_hold"]["count"]
    assert held >= 3 if client == "confluent" else held == 0
    assert run["checkpoint_failures"] == 1
    assert run["redis_healthy"] and run["checkpoints"] >= 3
    store = CheckpointStore(connect(cfg.redis.url), cfg.name, TEST_SECRET.encode())
    labels = [(store.meta(v) or {})["labels"] for v in store.versions()]
    assert labels == sorted(labels) and labels[-1] == total
    # The first write landed at the label count the cadence asked for, and the failed one
    # (at 80) was retried: a later version holds its labels and more.
    assert labels[0] == EVERY and EVERY * 2 not in labels and labels[1] > EVERY * 2
    assert learning_state(report) == learning_state(synchronous.report)
    assert probe_predictions(cfg, store) == synchronous.probe


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_sigkill_while_a_background_write_is_in_flight(
    make_config: Any, synchronous: Reference, tmp_path: Path
) -> None:
    cfg = make_config(with_background(True))
    total = publish(cfg, "river:Bananas", "30").labels
    config_file = write_config(cfg, tmp_path / "run.yaml")
    env = {**os.environ, "RIVERLINE_CHECKPOINT_SECRET": TEST_SECRET}
    args = ["run", "--config", str(config_file), "--until-idle", "3"]
    store = CheckpointStore(connect(cfg.redis.url), cfg.name, TEST_SECRET.encode())
    kills = 0
    while kills < 3:
        proc = run_cli(args, env)
        child: list[int] = []
        deadline = time.monotonic() + 120
        while not child and proc.poll() is None and time.monotonic() < deadline:
            child = children(proc.pid)
        if not child:
            proc.communicate(timeout=60)
            break  # finished (or never forked) before a write was caught in flight
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        kills += 1
        # The child dies with its writer: nothing of the dead run lands afterwards.
        deadline = time.monotonic() + 10
        while alive(child[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child[0])
    assert kills >= 2, "writers killed while a background write was in flight"
    final = run_cli([*args, "--report", str(tmp_path / "final.json")], env)
    _, stderr = final.communicate(timeout=300)
    assert final.returncode == 0, stderr
    resumed = json.loads((tmp_path / "final.json").read_text())
    assert resumed["labels"] == total
    assert learning_state(resumed) == learning_state(synchronous.report)
    assert probe_predictions(cfg, store) == synchronous.probe


@pytest.fixture
def checkpointer_config(backends: Backends) -> Iterator[Any]:
    name = f"test-bg-{uuid.uuid4().hex[:10]}"
    yield load_config(None, {"name": name, "checkpoint": {"insecure": True}}, environ={})
    delete_pipelines(backends, {name})


class State:
    """The one attribute a checkpointer reads from the state it writes."""

    def __init__(self, labels: int) -> None:
        self.labels = labels


def test_a_child_that_cannot_reach_redis_is_retried_then_lands(
    backends: Backends, checkpointer_config: Any
) -> None:

    cfg = checkpointer_config
    unreachable = CheckpointStore(connect("redis://127.0.0.1:1/0"), cfg.name, None, insecure=True)
    checkpointer = Checkpointer(unreachable, cfg)
    assert checkpointer.background
    lock = threading.RLock()
    offsets = {("events", 0): 7}
    checkpointer.start(State(3), offsets, {}, None, lock)
    assert checkpointer.in_flight is not None
    assert checkpointer.collect(block=True) is None
    assert checkpointer.failures == 1 and not checkpointer.healthy
    assert checkpointer.version is None and checkpointer.offsets == {}
    # Retried on the backoff schedule, as a synchronous write's Redis error is.
    assert checkpointer.due(checkpointer.retry_at, offsets)
    store = CheckpointStore(connect(backends.redis), cfg.name, None, insecure=True)
    checkpointer.store = store
    checkpointer.start(State(3), offsets, {"reason": "test"}, None, lock)
    offsets[("events", 0)] = 8  # moved after the fork: not what the child writes
    version = checkpointer.collect(block=True)
    assert version is not None and checkpointer.healthy and store.latest_version() == version
    assert checkpointer.offsets == {("events", 0): 7} == store.load(version).offsets
    assert checkpointer.labels_at_checkpoint == 3 and store.load(version).state.labels == 3


def test_a_fenced_child_is_reported_as_fenced(backends: Backends, checkpointer_config: Any) -> None:

    cfg = checkpointer_config
    client = connect(backends.redis)
    store = CheckpointStore(client, cfg.name, None, insecure=True)
    client.set(store.key("lease:fence"), 5)  # a newer writer took the pipeline
    checkpointer = Checkpointer(store, cfg)
    checkpointer.start(State(1), {("events", 0): 1}, {}, 4, threading.RLock())
    with pytest.raises(Fenced):
        checkpointer.collect(block=True)
    assert store.latest_version() is None
