"""Two ``riverline run`` processes while Redis forgets the pipeline's keys mid-run (issue 18).

A writer and a standby serve a paced stream; the pipeline's keys (its own prefix only: what an
empty Redis restart leaves of them) are deleted until the standby is the one that acquires
the lease. The old writer must stop without writing over its successor, and the successor must
go on to the end: every event predicted, its checkpoints the only ones.
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer

from pipeline.checkpointing.store import CheckpointStore
from pipeline.state.lease import Lease
from pipeline.state.redis_client import connect
from producers.replay import replay
from producers.schedule import parse_delay
from producers.sources import SourceOptions
from tests.conftest import TEST_SECRET
from tests.integration.cli import (
    assert_one_error,
    cli_env,
    finish,
    riverline,
    riverline_argv,
    start,
)
from tests.integration.helpers import json_values, publish, read_topic, wait_for, write_config

pytestmark = pytest.mark.integration

EVENTS = 1500
WAIT = 120.0  # generous: the machine is shared; nothing here asserts a duration


def test_a_redis_that_forgets_mid_run_hands_over_to_the_standby(
    make_config: Any, tmp_path: Path
) -> None:
    """Before: the standby drew the old writer's token (1), and its group join hung for good
    (the old writer left the group mid-rebalance)."""
    cfg = make_config(
        {
            "fallback": {"default": False},
            "kafka": {"partitions": 2},
            # The writer renews every 2 s and the standby looks every second: after the keys
            # go, the standby usually acquires first (the loop below deletes again if not).
            "checkpoint": {"every_labels": 50, "every_seconds": 1, "lease_ttl_ms": 6000},
        }
    )
    assert cfg.kafka.bootstrap is not None
    client = connect(cfg.redis.url)
    store = CheckpointStore(client, cfg.name, TEST_SECRET.encode())
    lease = Lease(client, cfg.name, 6000)
    config = str(write_config(cfg, tmp_path / "run.yaml"))
    args = ["run", "--config", config, "--until-idle", "6"]
    env = cli_env()

    def paced() -> None:
        replay(
            cfg,
            str(cfg.kafka.bootstrap),
            "river:Bananas",
            parse_delay("30"),
            options=SourceOptions(limit=EVENTS),
            speed=150.0,
        )

    producer = threading.Thread(target=paced, daemon=True)
    producer.start()
    first = start([*args, "--report", str(tmp_path / "a.json")], env)
    second: subprocess.Popen[str] | None = None
    try:
        wait_for(lambda: store.latest_version() is not None, WAIT, "the first writer's checkpoint")
        first_owner = (lease.holder() or "").rsplit(" ", 1)[0]
        second_log = tmp_path / "second.log"
        with second_log.open("w") as log_file:
            second = subprocess.Popen(
                [*riverline_argv(), *args, "--report", str(tmp_path / "b.json")],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                text=True,
            )
            wait_for(lambda: "standby" in second_log.read_text(), WAIT, "the standby")
            deleted = 0

            def standby_holds() -> bool:
                holder = lease.holder()
                return holder is not None and not holder.startswith(first_owner + " ")

            while not standby_holds():
                store.delete_all()  # what an empty restart leaves of this pipeline's keys
                deleted += 1
                wait_for(lambda: lease.holder() is not None, WAIT, "someone holding the lease")
            producer.join(WAIT)
            old = finish(first, WAIT)
            second.wait(WAIT * 3)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert second is not None
    log = second_log.read_text()
    assert second.returncode == 0, log
    assert "writer lease acquired" in log
    assert deleted >= 1
    # The old writer never wrote over its successor: it stopped fenced, in one line, when it
    # tried to; on a loaded machine the stream may end first, and it stops idle, with nothing to
    # write (the owners below are the proof either way).
    if old.returncode != 0:
        assert_one_error_kind(old, 3, "fenced:", "stopping without writing")
    assert "Traceback" not in old.stderr
    owners = {(store.meta(v) or {}).get("owner") for v in store.versions()}
    assert first_owner not in owners
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["events"] == EVENTS
    predictions = json_values(read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.predictions))
    events = json_values(read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.events))
    assert {p["id"] for p in predictions} == {e["id"] for e in events}


def assert_one_error_kind(
    result: subprocess.CompletedProcess[str], status: int, kind: str, logged: str
) -> None:
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    assert sum(line.startswith(kind) for line in result.stderr.splitlines()) == 1, result.stderr
    assert logged in result.stderr


def test_a_group_that_never_assigns_stops_the_writer_in_one_line(
    make_config: Any, tmp_path: Path
) -> None:
    """A group stuck in a rebalance: the writer says so and exits 1 instead of hanging."""
    cfg = make_config({"fallback": {"default": False}, "kafka": {"join_timeout_seconds": 8}})
    assert cfg.kafka.bootstrap is not None
    publish(cfg, "river:Bananas", "30", limit=50)
    # A member that joined and then stops polling: its heartbeats keep it in the group, so the
    # rebalance the writer's join starts waits for it to rejoin (up to its poll interval).
    squatter = KafkaConsumer(
        cfg.kafka.topics.events,
        group_id=cfg.name,
        bootstrap_servers=cfg.kafka.bootstrap,
        max_poll_interval_ms=300_000,
        session_timeout_ms=30_000,
        heartbeat_interval_ms=1000,
    )
    try:

        def joined() -> bool:
            squatter.poll(timeout_ms=100)
            return bool(squatter.assignment())

        wait_for(joined, WAIT, "the squatter's assignment")
        config = str(write_config(cfg, tmp_path / "run.yaml"))
        result = riverline(["run", "--config", config, "--until-idle", "2"], cli_env(), WAIT)
    finally:
        squatter.close(autocommit=False)
    assert_one_error(result, 1, cfg.name, "no partitions assigned", "kafka.join_timeout_seconds")
