"""Exactly-once learning state: crashes, a second writer, tampering, Redis outages, rollback."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from river import datasets

from consumers.run import Consumer
from consumers.signals import StopFlag
from pipeline.checkpointing.store import CRASH_ENV, CheckpointStore, Fenced
from pipeline.core import LearningCore
from pipeline.kafka.embedded import (
    BrokerUnavailable,
    EmbeddedBroker,
    broker_binary,
    free_port,
    wait_for_port,
)
from pipeline.state.lease import Lease, LeaseLost
from pipeline.state.redis_client import connect
from tests.conftest import TEST_SECRET, Backends, build_test_config, delete_pipelines
from tests.integration.helpers import (
    TcpProxy,
    consume,
    json_values,
    learning_state,
    publish,
    read_topic,
    run_cli,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration

SLOW_MODEL = {
    # A forest makes the consumer slow enough to be interrupted at many points.
    "model": {"spec": "forest.ARFClassifier(seed=7, n_models=5)"},
    "evaluation": {"metric": "Accuracy", "extra_metrics": ["LogLoss"]},
    "fallback": {"default": False},
    "kafka": {"partitions": 2},
    "gating": {"min_labels": 50, "window": 100},
    "checkpoint": {"every_labels": 40, "every_seconds": 3600, "lease_ttl_ms": 2000, "keep": 50},
}


def probe_predictions(cfg: Any, store: CheckpointStore) -> list[dict[Any, float]]:
    """The final model's answers on a fixed probe set."""
    checkpoint = store.load_latest()
    assert checkpoint is not None
    model = LearningCore.from_config(cfg, checkpoint.state).state.model
    probe = [x for x, _ in datasets.Bananas().take(200)]
    return [model.predict_proba_one(x) for x in probe]


@dataclass(frozen=True)
class Reference:
    """An uninterrupted run over the same stream: what every recovery must end equal to."""

    report: dict[str, Any]
    probe: list[dict[Any, float]]


@pytest.fixture(scope="module")
def reference(backends: Backends, transport: str) -> Iterator[Reference]:
    """One uninterrupted run of SLOW_MODEL over Bananas (delay 30), shared by this module.

    The replay is deterministic (ids, keys, partitions, times and seq headers), so a run over
    this pipeline's own topics equals one over any test's copy of the same replay. One per
    Kafka client: the tests that use it run on both.
    """
    name = f"test-ref-{uuid.uuid4().hex[:10]}"
    cfg = build_test_config(
        backends, name, {**SLOW_MODEL, "kafka": {**SLOW_MODEL["kafka"], "client": transport}}
    )
    try:
        publish(cfg, "river:Bananas", "30")
        report = consume(cfg)
        store = CheckpointStore(connect(cfg.redis.url), cfg.name, TEST_SECRET.encode())
        yield Reference(report, probe_predictions(cfg, store))
    finally:
        delete_pipelines(backends, {name})


def test_sigkill_at_random_moments_loses_nothing_and_learns_nothing_twice(
    make_config: Any, reference: Reference, tmp_path: Path
) -> None:
    cfg = make_config(SLOW_MODEL)
    total = publish(cfg, "river:Bananas", "30").labels
    assert total >= 5000
    config_file = write_config(cfg, tmp_path / "run.yaml")
    env = {**os.environ, "RIVERLINE_CHECKPOINT_SECRET": TEST_SECRET}
    store = CheckpointStore(connect(cfg.redis.url), cfg.name, TEST_SECRET.encode())
    args = ["run", "--config", str(config_file), "--until-idle", "3"]
    rng = random.Random(20261125)

    def labels_checkpointed() -> int:
        version = store.latest_version()
        meta = store.meta(version) if version else None
        return int(meta["labels"]) if meta else 0

    # First crash: inside the third checkpoint, between building it and the atomic write.
    crash = run_cli(args, {**env, CRASH_ENV: "3"})
    crash.communicate(timeout=120)
    assert crash.returncode == -signal.SIGKILL
    assert labels_checkpointed() == 80  # the third write never happened: two are there
    kills = 1
    while kills < 4:
        before = labels_checkpointed()
        proc = run_cli(args, env)
        wait_for(lambda b=before: labels_checkpointed() > b, 120, "progress after restart")
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is not None:
            break  # finished before the kill: the stream is done
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        kills += 1
    assert kills >= 4, "three random kills on top of the mid-checkpoint one"
    final = run_cli([*args, "--report", str(tmp_path / "final.json")], env)
    _, stderr = final.communicate(timeout=300)
    assert final.returncode == 0, stderr
    assert "resuming from checkpoint" in stderr

    resumed = json.loads((tmp_path / "final.json").read_text())
    assert resumed["labels"] == reference.report["labels"] == total  # none lost, none twice
    assert resumed["events"] == total
    assert learning_state(resumed) == learning_state(reference.report)
    assert probe_predictions(cfg, store) == reference.probe


@pytest.mark.parametrize("transport", ["kafka-python"], scope="module")
def test_single_writer_standby_takes_over(
    make_config: Any, reference: Reference, tmp_path: Path
) -> None:
    cfg = make_config(SLOW_MODEL)
    publish(cfg, "river:Bananas", "30")
    config_file = write_config(cfg, tmp_path / "run.yaml")
    env = {**os.environ, "RIVERLINE_CHECKPOINT_SECRET": TEST_SECRET}
    client = connect(cfg.redis.url)
    store = CheckpointStore(client, cfg.name, TEST_SECRET.encode())
    lease = Lease(client, cfg.name, 2000)
    args = ["run", "--config", str(config_file), "--until-idle", "3"]
    first = run_cli([*args, "--report", str(tmp_path / "a.json")], env)
    wait_for(lambda: store.latest_version() is not None, 60, "the first writer's checkpoint")
    second_log = tmp_path / "second.log"
    with second_log.open("w") as log_file:
        second = run_cli([*args, "--report", str(tmp_path / "b.json")], env, stderr=log_file)
        # On a loaded machine the second process may take seconds to start: kill the first
        # writer only once the second is known to wait as a standby.
        wait_for(lambda: "standby" in second_log.read_text(), 120, "the standby")
        owners = {(store.meta(v) or {}).get("owner") for v in store.versions()}
        assert len(owners) == 1 and lease.holder() is not None  # one writer only
        first_owner = owners.pop()
        assert second.poll() is None  # waiting as a standby, not writing
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
        second.communicate(timeout=300)
    stderr = second_log.read_text()
    assert second.returncode == 0, stderr
    assert "standby" in stderr and "writer lease acquired" in stderr
    last = store.meta(store.latest_version() or 0) or {}
    assert last["owner"] != first_owner

    taken_over = json.loads((tmp_path / "b.json").read_text())
    assert learning_state(taken_over) == learning_state(reference.report)
    assert probe_predictions(cfg, store) == reference.probe


def test_a_writer_whose_lease_was_taken_is_fenced(make_config: Any) -> None:
    cfg = make_config(
        {**SLOW_MODEL, "checkpoint": {**SLOW_MODEL["checkpoint"], "every_labels": 20}}
    )
    publish(cfg, "river:Bananas", "30")
    client = connect(cfg.redis.url)
    store = CheckpointStore(client, cfg.name, TEST_SECRET.encode())
    consumer = Consumer(cfg, cfg.kafka.bootstrap, client, until_idle=3, stop=StopFlag())
    errors: list[BaseException] = []

    def run() -> None:
        try:
            consumer.run()
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: store.latest_version() is not None, 60, "a first checkpoint")
    # Someone else takes the pipeline (as after a long GC pause of the first writer).
    client.delete(f"riverline:{cfg.name}:lease")
    intruder = Lease(client, cfg.name, 60_000, owner="intruder")
    assert intruder.try_acquire()
    version_when_taken = store.latest_version()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], LeaseLost | Fenced)
    assert store.latest_version() == version_when_taken  # nothing written after the takeover
    # The raw store refuses a stale token too.
    with pytest.raises(Fenced):
        store.save({"stale": True}, {}, token=consumer.lease.token)


def test_tampered_or_unsigned_checkpoint_is_refused(make_config: Any, tmp_path: Path) -> None:
    cfg = make_config({"evaluation": {"metric": "Accuracy"}, "fallback": {"default": False}})
    publish(cfg, "river:Phishing", "10", limit=300)
    consume(cfg)
    client = connect(cfg.redis.url)
    store = CheckpointStore(client, cfg.name, TEST_SECRET.encode())
    latest = store.latest_version()
    key = f"riverline:{cfg.name}:ckpt:{latest}"
    blob = bytearray(client.hget(key, "blob"))
    blob[len(blob) // 2] ^= 0x01
    client.hset(key, "blob", bytes(blob))
    config_file = write_config(cfg, tmp_path / "run.yaml")
    env = {**os.environ, "RIVERLINE_CHECKPOINT_SECRET": TEST_SECRET}
    proc = run_cli(["run", "--config", str(config_file), "--until-idle", "1"], env)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "failed its signature check" in stderr and "refusing to load it" in stderr
    assert store.latest_version() == latest and client.hget(key, "blob") == bytes(blob)

    client.hset(key, "sig", "")
    proc = run_cli(["run", "--config", str(config_file), "--until-idle", "1"], env)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "is not signed" in stderr


def test_redis_outage_mid_run_loses_nothing(
    make_config: Any, reference: Reference, tmp_path: Path
) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("needs redis-server on PATH to start (and stop) a private Redis")
    port = free_port()
    workdir = tmp_path / "redis"
    workdir.mkdir()
    command = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(workdir),
        "--appendonly",
        "yes",
        "--save",
        "",
    ]

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for_port("127.0.0.1", port, 10)
        return proc

    redis_proc = start()
    try:
        url = f"redis://127.0.0.1:{port}/0"
        cfg = make_config({**SLOW_MODEL, "redis": {"url": url}})
        total = publish(cfg, "river:Bananas", "30").labels
        client = connect(url)
        store = CheckpointStore(client, cfg.name, TEST_SECRET.encode())
        consumer = Consumer(cfg, cfg.kafka.bootstrap, client, until_idle=2)
        result: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: result.update(report=consumer.run()))
        thread.start()
        wait_for(
            lambda: (store.meta(store.latest_version() or 0) or {}).get("labels", 0) >= 400,
            60,
            "checkpoints before the outage",
        )
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
        labels_at_outage = consumer.core.state.labels
        wait_for(lambda: not consumer.redis_healthy, 30, "the consumer noticing the outage")
        wait_for(
            lambda: consumer.core.state.labels > labels_at_outage + 100,
            60,
            "serving and learning during the outage",
        )
        time.sleep(1.0)
        redis_proc = start()
        thread.join(timeout=300)
        assert not thread.is_alive()
        report = result["report"]
        assert report["run"]["redis_healthy"]
        assert report["labels"] == total
        assert learning_state(report) == learning_state(reference.report)
        assert store.load_latest() is not None  # the state reached the restarted Redis
        assert probe_predictions(cfg, store) == reference.probe
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)


def test_broker_outage_mid_run_loses_nothing(make_config: Any, reference: Reference) -> None:
    try:
        broker_binary()
    except BrokerUnavailable as e:
        pytest.skip(f"needs the embedded broker to cut it off: {e}")
    broker_port, proxy_port = free_port(), free_port()
    # Clients reach this private broker only through the proxy: cutting it is an outage.
    proxy = TcpProxy(proxy_port, broker_port).start()
    with EmbeddedBroker(port=broker_port, advertised_port=proxy_port):
        bootstrap = f"127.0.0.1:{proxy_port}"
        cfg = make_config({**SLOW_MODEL, "kafka": {"partitions": 2, "bootstrap": bootstrap}})
        total = publish(cfg, "river:Bananas", "30").labels
        store = CheckpointStore(connect(cfg.redis.url), cfg.name, TEST_SECRET.encode())
        consumer = Consumer(
            cfg,
            bootstrap,
            connect(cfg.redis.url),
            until_idle=3,
            # Sends that wait longer than this fail: the outage must not lose them.
            producer_options={"delivery_timeout_ms": 2000, "request_timeout_ms": 1000},
        )
        result: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: result.update(report=consumer.run()))
        thread.start()
        wait_for(lambda: consumer.core.state.labels >= 1000, 120, "progress before the outage")
        proxy.cut()
        labels_at_cut = consumer.core.state.labels
        # Longer than the session timeout: the group forgets the consumer, which must rejoin.
        time.sleep(8)
        assert thread.is_alive(), "the consumer stopped during the outage"
        assert consumer.core.state.labels < total
        proxy.restore()
        thread.join(timeout=300)
        assert not thread.is_alive()
        report = result["report"]
        assert report["labels"] == total > labels_at_cut
        assert learning_state(report) == learning_state(reference.report)
        assert probe_predictions(cfg, store) == reference.probe
        predictions = json_values(read_topic(bootstrap, cfg.kafka.topics.predictions))
        # At least once: every event's prediction is there, none lost in the outage.
        assert {p["id"] for p in predictions} == {str(i) for i in range(total)}
    proxy.cut()


def test_rollback_resumes_from_the_older_version(
    make_config: Any, pipeline_name: str, tmp_path: Path
) -> None:
    overrides = {
        "evaluation": {"metric": "Accuracy"},
        "fallback": {"default": False},
        "model": {"spec": "tree.HoeffdingTreeClassifier(grace_period=50)"},
        "checkpoint": {"every_labels": 100, "keep": 50},
    }
    cfg = make_config(overrides)
    publish(cfg, "river:Phishing", "20")
    finished = consume(cfg)
    client = connect(cfg.redis.url)
    store = CheckpointStore(client, cfg.name, TEST_SECRET.encode())
    older = next(v for v in store.versions() if (store.meta(v) or {})["labels"] == 500)
    config_file = write_config(cfg, tmp_path / "run.yaml")
    env = {**os.environ, "RIVERLINE_CHECKPOINT_SECRET": TEST_SECRET}
    listed = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "checkpoint", "list", "--config", str(config_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0 and str(older) in listed.stdout
    rolled = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "checkpoint",
            "rollback",
            str(older),
            "--config",
            str(config_file),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rolled.returncode == 0, rolled.stderr
    assert store.latest_version() == older
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "checkpoint",
            "show",
            str(older),
            "--config",
            str(config_file),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and '"labels": 500' in shown.stdout
    again = run_cli(
        [
            "run",
            "--config",
            str(config_file),
            "--until-idle",
            "2",
            "--report",
            str(tmp_path / "again.json"),
        ],
        env,
    )
    _, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr
    assert f"resuming from checkpoint {older} (500 labels learned)" in stderr

    resumed = json.loads((tmp_path / "again.json").read_text())
    # From version `older` on, the same records in the same order: the same end state.
    assert learning_state(resumed) == learning_state(finished)


def send_pairs(cfg: Any, partition: int, ids: range) -> None:
    """Events and their labels (half a second later), all to one partition of each topic."""
    producer = KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap)
    for i in ids:
        ts = 1_700_000_000.0 + i
        event = {"id": f"e{i}", "ts": ts, "features": {"x": float(i % 7)}}
        label = {"id": f"e{i}", "ts": ts + 0.5, "label": i % 3 == 0}
        for topic, record in ((cfg.kafka.topics.events, event), (cfg.kafka.topics.labels, label)):
            producer.send(topic, value=json.dumps(record).encode(), partition=partition)
    producer.flush()
    producer.close()


def checkpointed_offsets(cfg: Any) -> dict[tuple[str, int], int]:
    checkpoint = CheckpointStore(
        connect(cfg.redis.url), cfg.name, TEST_SECRET.encode()
    ).load_latest()
    assert checkpoint is not None
    return checkpoint.offsets


PAIRS = {
    "model": {"spec": "linear_model.LogisticRegression"},
    "evaluation": {"metric": "Accuracy"},
    "fallback": {"default": False},
    "kafka": {"partitions": 2},
}


def test_a_partition_without_checkpointed_offset_starts_from_earliest(make_config: Any) -> None:
    # Tansu cannot add partitions to a topic, so the new partition is one that had no records
    # (hence no checkpointed offset) until now: the same path as a topic that grew.
    cfg = make_config({**PAIRS, "kafka": {"partitions": 2, "reset_policy": "earliest"}})
    events, labels = cfg.kafka.topics.events, cfg.kafka.topics.labels
    send_pairs(cfg, 0, range(40))
    assert consume(cfg)["labels"] == 40
    assert checkpointed_offsets(cfg) == {(events, 0): 40, (labels, 0): 40}
    send_pairs(cfg, 1, range(40, 70))
    report = consume(cfg)
    assert report["events"] == report["labels"] == 70
    assert checkpointed_offsets(cfg) == {
        (events, 0): 40,
        (labels, 0): 40,
        (events, 1): 30,
        (labels, 1): 30,
    }


def test_a_partition_without_checkpointed_offset_starts_from_latest(make_config: Any) -> None:
    cfg = make_config({**PAIRS, "kafka": {"partitions": 2, "reset_policy": "latest"}})
    events, labels = cfg.kafka.topics.events, cfg.kafka.topics.labels
    send_pairs(cfg, 0, range(40))
    assert consume(cfg)["labels"] == 40  # no checkpoint yet: from the start, whatever the policy
    probe = KafkaConsumer(bootstrap_servers=cfg.kafka.bootstrap)
    end = probe.end_offsets([TopicPartition(events, 0)])[TopicPartition(events, 0)]
    probe.close()
    if end != 40:
        pytest.skip(
            f"this broker's ListOffsets says the end of a 40-record partition is {end} (Tansu "
            "0.6 does), so it cannot seek to the end: the latest policy needs Apache Kafka"
        )
    send_pairs(cfg, 1, range(40, 60))  # there before the consumer knew the partition: skipped
    consumer = Consumer(cfg, cfg.kafka.bootstrap, connect(cfg.redis.url), until_idle=3)
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(report=consumer.run()))
    thread.start()
    # Once both new partitions have a known lag, their start position is resolved.
    wait_for(
        lambda: consumer.lags.get((events, 1)) == 0 and consumer.lags.get((labels, 1)) == 0,
        60,
        "the consumer positioned at the end of the new partitions",
    )
    send_pairs(cfg, 1, range(60, 75))
    thread.join(timeout=120)
    report = result["report"]
    assert report["events"] == report["labels"] == 40 + 15
    assert checkpointed_offsets(cfg) == {
        (events, 0): 40,
        (labels, 0): 40,
        (events, 1): 35,
        (labels, 1): 35,
    }
