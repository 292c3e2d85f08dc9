"""Model versions in the real Redis: publish, list, load, trust, fencing, and the watcher."""

from __future__ import annotations

import itertools
import json
import logging
import pickle
import shutil
import subprocess
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from river import datasets

from pipeline.checkpointing.model_versions import ModelVersionStore
from pipeline.checkpointing.store import CheckpointStore
from pipeline.checkpointing.trust import CheckpointError, Fenced
from pipeline.config import RiverlineConfig
from pipeline.core import LearningCore
from pipeline.kafka.embedded import free_port, wait_for_port
from pipeline.provenance import provenance
from pipeline.schemas import Event, Label
from pipeline.serving.predictor_core import ServingCore
from pipeline.serving.snapshot import ServingSnapshot, snapshot_of
from pipeline.serving.watcher import ModelWatcher
from pipeline.state.lease import Lease
from pipeline.state.redis_client import connect
from tests.conftest import TEST_SECRET
from tests.integration.cli import assert_one_error, cli_env, riverline_all
from tests.integration.helpers import write_config
from tests.integration.test_checkpoint_trust import CreatesFile

pytestmark = pytest.mark.integration

SECRET = TEST_SECRET.encode()
WAIT = 30.0  # generous: the machine is shared; nothing here asserts a duration


def learner_config(make_config: Any, **overrides: Any) -> RiverlineConfig:
    base = {
        "fallback": {"default": False},
        "gating": {"min_labels": 20, "window": 30},
        "drift": {"detector": None},
    }
    return make_config({**base, **overrides})  # type: ignore[no-any-return]


class Learner:
    """A learning core fed Bananas, snapshotted at will."""

    def __init__(self, cfg: RiverlineConfig) -> None:
        self.cfg = cfg
        self.core = LearningCore.from_config(cfg)
        self.rows = enumerate(datasets.Bananas())

    def learn(self, n: int) -> None:
        for i, (x, y) in itertools.islice(self.rows, n):
            self.core.on_event(Event(id=str(i), ts=float(i), features=dict(x)))
            self.core.on_label(Label(id=str(i), ts=float(i), label=y))

    def snapshot(self) -> ServingSnapshot:
        return snapshot_of(self.core, self.cfg, {(self.cfg.kafka.topics.events, 0): 0})


def store_for(cfg: RiverlineConfig, **kw: Any) -> ModelVersionStore:
    options: dict[str, Any] = {"secret": SECRET, "keep": 10, **kw}
    return ModelVersionStore(connect(cfg.redis.url), cfg.name, **options)


def probe_events(n: int = 30) -> list[Event]:
    rows = itertools.islice(datasets.Bananas(), 1000, 1000 + n)
    return [Event(id=f"p{i}", ts=0.0, features=dict(x)) for i, (x, _) in enumerate(rows)]


def served(cfg: RiverlineConfig, snapshot: ServingSnapshot) -> list[bytes | None]:
    core = ServingCore(cfg, snapshot)
    return [core.on_event(e).prediction_json() for e in probe_events()]


def test_publish_list_meta_and_load(make_config: Any) -> None:
    cfg = learner_config(make_config)
    learner, store = Learner(cfg), store_for(cfg)
    assert store.latest_version() is None and store.list() == []
    learner.learn(50)
    first = learner.snapshot()
    assert store.publish(first) == 50
    learner.learn(100)
    second = learner.snapshot()
    assert second.mode == "serving"  # promoted meanwhile: the version carries its gating
    store.publish(second)
    assert store.latest_version() == 150 and store.versions() == [50, 150]
    listed = store.list()
    assert [m["version"] for m in listed] == [50, 150]
    meta = listed[1]
    assert meta["mode"] == "serving" and meta["labels"] == 150 and meta["bytes"] > 0
    assert meta["thresholds"]["min_labels"] == 20
    assert meta["provenance"]["model_spec"] == cfg.model.spec
    assert meta["provenance"]["offsets"] == {f"{cfg.kafka.topics.events}[0]": 0}
    assert len(meta["provenance"]["config_digest"]) == 64
    assert store.meta(150) == meta and store.meta(7) is None
    assert store.verify(150) == "verified"
    loaded = store.load(150)
    assert loaded.version == 150 and loaded.gating.mode == "serving"
    # What a predictor serves with the loaded version is what the learner's snapshot serves.
    assert served(cfg, loaded) == served(cfg, second)
    assert served(cfg, store.load(50)) == served(cfg, first) != served(cfg, second)


def test_republishing_a_version_changes_nothing(make_config: Any) -> None:
    cfg = learner_config(make_config)
    learner, store = Learner(cfg), store_for(cfg)
    learner.learn(40)
    store.publish(learner.snapshot())
    before = store.client.hgetall(store.key("model:40"))
    pubsub = store.client.pubsub()
    pubsub.subscribe(store.channel)
    confirmed = pubsub.get_message(timeout=WAIT)
    assert confirmed is not None and confirmed["type"] == "subscribe"
    assert store.publish(learner.snapshot()) == 40  # e.g. a learner restarted from a checkpoint
    assert store.client.hgetall(store.key("model:40")) == before
    assert store.versions() == [40]
    assert pubsub.get_message(timeout=1.0) is None  # not announced again
    pubsub.close()


def test_keep_trims_the_oldest_and_latest_never_moves_back(make_config: Any) -> None:
    cfg = learner_config(make_config)
    learner, store = Learner(cfg), store_for(cfg, keep=3)
    for _ in range(5):
        learner.learn(10)
        store.publish(learner.snapshot())
    assert store.versions() == [30, 40, 50]
    assert not store.client.exists(store.key("model:10"), store.key("model:20"))
    # An older version (a learner restarted from an older checkpoint) is kept but not latest.
    old = Learner(cfg)
    old.learn(45)
    store.publish(old.snapshot())
    assert store.latest_version() == 50
    assert store.versions() == [40, 45, 50]


def test_a_stale_learner_cannot_publish(make_config: Any) -> None:
    cfg = learner_config(make_config)
    learner, store = Learner(cfg), store_for(cfg)
    client = store.client
    first = Lease(client, cfg.name, 60_000, owner="first")
    assert first.try_acquire()
    learner.learn(10)
    store.publish(learner.snapshot(), token=first.token)
    first.release()
    second = Lease(client, cfg.name, 60_000, owner="second")
    assert second.try_acquire() and second.token != first.token
    learner.learn(10)
    with pytest.raises(Fenced, match="model version refused"):
        store.publish(learner.snapshot(), token=first.token)
    assert store.versions() == [10] and store.latest_version() == 10
    store.publish(learner.snapshot(), token=second.token)
    assert store.latest_version() == 20


def plant(store: ModelVersionStore, kind: str, payload: Path, good: ServingSnapshot) -> int:
    """A version whose blob creates ``payload`` if unpickled: tampered with, or unsigned."""
    evil = zlib.compress(pickle.dumps(CreatesFile(payload)))
    if kind == "tampered":
        version = store.publish(good)
        store.client.hset(store.key(f"model:{version}"), "blob", evil)
        return version
    version = good.version + 1000
    store.client.hset(
        store.key(f"model:{version}"),
        mapping={"blob": evil, "meta": b'{"version": %d}' % version, "sig": b""},
    )
    store.client.zadd(store.key("model:versions"), {version: version})
    store.client.set(store.key("model:latest"), version)
    return version


CASES = {
    # kind of version, whether the reader has the secret, what the refusal says
    "tampered": ("tampered", True, "failed its signature check"),
    "unsigned": ("unsigned", True, "is not signed"),
    "unsigned-no-secret": ("unsigned", False, "no checkpoint secret is set"),
}


@pytest.mark.parametrize("case", CASES)
def test_an_unverified_version_is_never_unpickled(
    case: str, make_config: Any, tmp_path: Path
) -> None:
    kind, with_secret, refusal = CASES[case]
    cfg = learner_config(make_config)
    learner, store = Learner(cfg), store_for(cfg)
    learner.learn(10)
    store.publish(learner.snapshot())
    reader = store_for(cfg, secret=SECRET if with_secret else None, insecure=False)
    # A watcher that serves version 10 refuses the bad one and keeps serving 10.
    with ModelWatcher(reader, poll_seconds=0.1, subscribe=False) as watcher:
        if with_secret:
            assert watcher.wait_for(10, WAIT)
        learner.learn(10)
        payload = tmp_path / "pwned"
        bad = plant(store, kind, payload, learner.snapshot())
        wait_until(lambda: bad in watcher.refused, "the watcher did not look at it")
        taken = watcher.take()
        assert (taken.version if taken else None) == (10 if with_secret else None)
    assert not payload.exists()
    # A predictor starting now, with the bad version as the latest, serves the newest good one.
    with ModelWatcher(reader, poll_seconds=0.1, subscribe=False) as late:
        wait_until(lambda: bad in late.refused, "the late watcher did not look at it")
        if with_secret:
            assert late.wait_for(10, WAIT)
        else:
            wait_until(lambda: 10 in late.refused, "the late watcher did not try 10")
        taken = late.take()
        assert (taken.version if taken else None) == (10 if with_secret else None)
    assert not payload.exists()
    with pytest.raises(CheckpointError, match=refusal) as refused:
        reader.load(bad)
    assert f"model:{bad}" in str(refused.value) and "refusing to load it" in str(refused.value)
    assert not payload.exists()
    # The CLI refuses it without unpickling, --load or not; the metadata still lists.
    config = str(write_config(cfg, tmp_path / "c.yaml"))
    env = cli_env(TEST_SECRET if with_secret else None)
    show, load, listed = riverline_all(
        [
            ["model", "show", str(bad), "--config", config],
            ["model", "show", str(bad), "--load", "--config", config],
            ["model", "list", "--config", config],
        ],
        env,
    )
    for result in (show, load):
        assert_one_error(result, 1, f"model:{bad}", refusal, "refusing to load it")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    assert not payload.exists()


def test_cli_lists_and_shows(make_config: Any, tmp_path: Path) -> None:
    cfg = learner_config(make_config)
    learner, store = Learner(cfg), store_for(cfg)
    learner.learn(30)
    store.publish(learner.snapshot())
    learner.learn(120)
    store.publish(learner.snapshot())
    # A checkpoint whose metadata carries provenance, as the consumer writes it.
    offsets = {(cfg.kafka.topics.events, 0): 150}
    checkpoints = CheckpointStore(store.client, cfg.name, SECRET)
    checkpoint = checkpoints.save(
        learner.core.state, offsets, {"reason": "test", **provenance(cfg, offsets)}
    )
    config = str(write_config(cfg, tmp_path / "c.yaml"))
    dead = "redis://127.0.0.1:1/0"
    listed, shown, loaded, missing, down, ckpt = riverline_all(
        [
            ["model", "list", "--config", config],
            ["model", "show", "150", "--config", config],
            ["model", "show", "150", "--load", "--config", config],
            ["model", "show", "151", "--config", config],
            ["model", "list", "--config", config, "--redis-url", dead],
            ["checkpoint", "show", str(checkpoint), "--config", config],
        ],
        cli_env(),
    )
    assert listed.returncode == 0, listed.stderr
    digest = store.meta(150)["provenance"]["config_digest"]  # type: ignore[index]
    rows = [line for line in listed.stdout.splitlines() if digest[:12] in line]
    assert len(rows) == 2 and "*" in rows[1] and "*" not in rows[0], listed.stdout
    assert "serving" in rows[1] and "0.1.0" in rows[1]
    assert shown.returncode == 0, shown.stderr
    body = json.loads(shown.stdout)
    assert body["signature"] == "verified" and body["meta"]["version"] == 150
    assert body["provenance"]["config_digest"] == digest and "model" not in body
    assert loaded.returncode == 0, loaded.stderr
    assert "LogisticRegression" in json.loads(loaded.stdout)["model"]
    assert_one_error(missing, 1, "model:151", "does not exist")
    assert_one_error(down, 1, "Redis", dead)
    assert ckpt.returncode == 0, ckpt.stderr
    made_of = json.loads(ckpt.stdout)["provenance"]
    assert made_of["config_digest"] == digest
    assert made_of["offsets"] == {f"{cfg.kafka.topics.events}[0]": 150}


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_the_watcher_hears_announcements(make_config: Any) -> None:
    cfg = learner_config(make_config)
    learner, store = Learner(cfg), store_for(cfg)
    with ModelWatcher(store, poll_seconds=3600) as watcher:  # one poll at the start, then none
        assert watcher.subscribed.wait(WAIT)
        assert watcher.take() is None
        learner.learn(25)
        store.publish(learner.snapshot())
        assert watcher.wait_for(25, WAIT)
        assert watcher.times[25].via == "pubsub"
        taken = watcher.take()
        assert taken is not None and taken.version == 25
        assert watcher.take() is None  # handed over once
        times = watcher.times[25]
        assert times.loaded_at is not None and times.taken_at is not None
        assert times.created_at == taken.created_at


def test_the_watcher_polls_what_pubsub_missed(make_config: Any) -> None:
    cfg = learner_config(make_config)
    learner, store = Learner(cfg), store_for(cfg)
    learner.learn(15)
    store.publish(learner.snapshot())  # before the watcher: no subscriber heard it
    with ModelWatcher(store, poll_seconds=0.1, subscribe=False) as watcher:
        assert watcher.wait_for(15, WAIT)
        learner.learn(15)
        store.publish(learner.snapshot())
        assert watcher.wait_for(30, WAIT)
        assert {v: t.via for v, t in watcher.times.items()} == {15: "poll", 30: "poll"}
        taken = watcher.take()
        assert taken is not None and taken.version == 30  # the newest, not each in turn


def test_the_watcher_never_goes_back(make_config: Any) -> None:
    cfg = learner_config(make_config)
    learner, store = Learner(cfg), store_for(cfg)
    learner.learn(50)
    store.publish(learner.snapshot())
    taken: list[int] = []
    with ModelWatcher(store, poll_seconds=0.05) as watcher:
        assert watcher.wait_for(50, WAIT)
        assert watcher.subscribed.wait(WAIT)
        first = watcher.take()
        assert first is not None
        taken.append(first.version)
        # An older version appears (a restarted learner) and is announced, then a newer one.
        old = Learner(cfg)
        old.learn(20)
        store.publish(old.snapshot())
        store.client.publish(store.channel, b"20")
        store.client.set(store.key("model:latest"), 20)  # even the pointer, by hand
        learner.learn(10)
        store.publish(learner.snapshot())
        assert watcher.wait_for(60, WAIT)
        while (snapshot := watcher.take()) is not None:
            taken.append(snapshot.version)
    assert taken == [50, 60]
    assert 20 not in watcher.times  # never even loaded


class RedisServer:
    """A private redis-server on a fixed port, stopped and started again by the test."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="riverline-model-test-")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert wait_for_port("127.0.0.1", self.port, 10.0)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    server = RedisServer()
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


def test_the_watcher_rides_out_a_redis_outage(
    make_config: Any, private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = learner_config(make_config)
    learner = Learner(cfg)
    store = ModelVersionStore(connect(private_redis.url), cfg.name, SECRET)
    learner.learn(30)
    store.publish(learner.snapshot())
    caplog.set_level(logging.INFO, logger="pipeline.serving.watcher")
    with ModelWatcher(store, poll_seconds=0.2) as watcher:
        assert watcher.wait_for(30, WAIT)
        assert watcher.subscribed.wait(WAIT)
        private_redis.stop()
        wait_until(lambda: not watcher.healthy, "the watcher did not notice Redis going away")
        time.sleep(1.0)  # several failed retries
        taken = watcher.take()
        assert taken is not None and taken.version == 30  # what it had, still served
        private_redis.start()  # empty: nothing was kept on disk
        learner.learn(30)
        store.publish(learner.snapshot())
        assert watcher.wait_for(60, WAIT)
        assert watcher.healthy
        again = watcher.take()
        assert again is not None and again.version == 60
    warnings = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(warnings) == 1  # once per outage, not per retry
    assert any("answers again" in r.getMessage() for r in caplog.records)


def test_a_watcher_on_a_dead_redis_waits_without_failing(make_config: Any) -> None:
    cfg = learner_config(make_config)
    store = ModelVersionStore(connect(f"redis://127.0.0.1:{free_port()}/0"), cfg.name, SECRET)
    with ModelWatcher(store, poll_seconds=0.1) as watcher:
        wait_until(lambda: not watcher.healthy, "the watcher did not notice")
        assert watcher.take() is None and not watcher.wait_for(1, 0.5)
    assert not watcher._thread.is_alive()


def test_a_promotion_is_published_at_once_in_a_full_speed_replay(
    make_config: Any, tmp_path: Path
) -> None:
    """Issue 19: the README says a version is published at once on a promotion; in a replay of
    data already in the broker the learner drained whole batches first, so the promotion's
    version was never published (the next one came with a checkpoint)."""
    from producers.replay import replay
    from producers.schedule import parse_delay
    from producers.sources import SourceOptions
    from tests.integration.cli import riverline

    cfg = learner_config(
        make_config,
        model={"spec": "preprocessing.StandardScaler | linear_model.LogisticRegression"},
        gating={"min_labels": 50, "window": 50},
        serving={"every_labels": 100_000, "every_seconds": 3600.0, "keep": 50},
        checkpoint={"every_labels": 100_000, "every_seconds": 3600.0},
    )
    assert cfg.kafka.bootstrap is not None
    replay(
        cfg,
        cfg.kafka.bootstrap,
        "river:Phishing",
        parse_delay("10"),
        options=SourceOptions(limit=600),
    )
    config = write_config(cfg, tmp_path / "learner.yaml")
    report_path = tmp_path / "learner.json"
    ran = riverline(
        ["learner", "--config", str(config), "--until-idle", "2", "--report", str(report_path)],
        cli_env(),
    )
    assert ran.returncode == 0, ran.stderr
    report = json.loads(report_path.read_text())
    assert report["promotions"], "the model was never promoted: nothing to check"
    assert report["model_errors"] == 0  # so a label index is the model version at that label
    published = {meta["version"] for meta in store_for(cfg).list()}
    for decision in report["promotions"] + report["demotions"]:
        assert decision["label_index"] in published, (decision, sorted(published))
