"""Scale-out: one learner, predictors on hot model versions, over 4 partitions.

Real processes (the console script) on the real broker and Redis. One run without failures is
shared by the checks that need no kill; one run with a predictor and the active learner
SIGKILLed checks delivery and exact recovery.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from consumers.learner import Learner
from pipeline.checkpointing.model_versions import ModelVersionStore
from pipeline.config import RiverlineConfig, load_config
from pipeline.schemas import parse_event
from pipeline.serving.predictor_core import ServingCore
from pipeline.state.lease import Lease
from pipeline.state.redis_client import connect
from producers.replay import replay
from producers.schedule import parse_delay
from tests.conftest import TEST_SECRET, Backends, build_test_config, delete_pipelines
from tests.integration.cli import riverline_argv
from tests.integration.helpers import (
    consume,
    learning_state,
    read_topic,
    run_cli,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration

SPEED = "120"  # events per second of the paced replay (river datasets: one event a second)
SPLIT: dict[str, Any] = {
    "model": {"spec": "preprocessing.StandardScaler | linear_model.LogisticRegression"},
    # Counts only: served answers are scored in whatever order they are read (see below).
    "evaluation": {"metric": "Accuracy", "extra_metrics": []},
    "fallback": {"default": False},
    "kafka": {"partitions": 4},
    "gating": {"min_labels": 100, "window": 100},
    "checkpoint": {"every_labels": 100, "every_seconds": 3600, "lease_ttl_ms": 2000},
    "serving": {"every_labels": 50, "every_seconds": 2.0, "keep": 1000, "poll_seconds": 0.5},
    "telemetry": {"status_every_seconds": 0.5},
    # The learner reads a live, paced stream: to learn in the replay's order (and so equal a
    # run over the finished topics), it waits for a caught-up partition a while
    # (docs/concepts/kafka-clients-latency.md, ordering.max_idle_ms); with 0, the order follows
    # arrival across partitions.
    "ordering": {"max_idle_ms": 500},
}


@dataclass
class Deployment:
    cfg: RiverlineConfig
    predictions: list[Any]  # consumer records of the predictions topic
    events: dict[str, Any]  # id -> Event
    learner_report: dict[str, Any]
    predictor_reports: list[dict[str, Any]]
    status_while_serving: str = ""


def _config(backends: Backends, tag: str) -> RiverlineConfig:
    name = f"test-split-{tag}-{os.urandom(5).hex()}"
    client = os.environ.get("RIVERLINE_TEST_KAFKA_CLIENT", "kafka-python")
    return build_test_config(
        backends, name, {**SPLIT, "kafka": {**SPLIT["kafka"], "client": client}}
    )


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERLINE_")}
    return {**env, "RIVERLINE_CHECKPOINT_SECRET": TEST_SECRET}


def _start(args: list[str], log: Path) -> subprocess.Popen[str]:
    # Logs to a file: a pipe nobody reads would block a chatty process.
    return run_cli(args, _env(), stdout=log.open("w"), stderr=subprocess.STDOUT)  # type: ignore[no-any-return]


def _finish(proc: subprocess.Popen[str], log: Path, timeout: float = 180) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"{proc.args} did not finish:\n{log.read_text()[-3000:]}") from None
    assert proc.returncode == 0, log.read_text()[-3000:]


def _collect(cfg: RiverlineConfig, learner: Path, predictors: list[Path]) -> Deployment:
    assert cfg.kafka.bootstrap is not None
    events = {
        e.id: e
        for e in (
            parse_event(r.value) for r in read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.events)
        )
    }
    return Deployment(
        cfg,
        read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.predictions),
        events,
        json.loads(learner.read_text()),
        [json.loads(p.read_text()) for p in predictors if p.exists()],
    )


def _wait_until_serving(cfg: RiverlineConfig, predictors: int) -> None:
    """The learner and the predictors joined their groups: the stream may start."""
    from pipeline.cli.status import predictor_statuses

    client = connect(cfg.redis.url)
    prefix = f"riverline:{cfg.name}:"

    def ready() -> bool:
        live = [p for p in predictor_statuses(client, prefix + "predictor:") if p.get("ready")]
        learner = client.get(prefix + "status")
        return len(live) >= predictors and learner is not None

    wait_for(ready, 90, f"a learner and {predictors} predictors serving")


class _Replay(threading.Thread):
    """The paced replay, in this process: it starts at once (a new process would take seconds
    to import on a loaded machine, and the roles' --until-idle counts from their start)."""

    def __init__(self, cfg: RiverlineConfig) -> None:
        super().__init__(daemon=True)
        self.cfg = cfg
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        assert self.cfg.kafka.bootstrap is not None
        try:
            replay(
                self.cfg,
                self.cfg.kafka.bootstrap,
                "river:Phishing",
                parse_delay("20"),
                speed=float(SPEED),
            )
        except BaseException as e:
            self.error = e

    def finish(self, timeout: float = 120) -> None:
        self.join(timeout)
        assert not self.is_alive(), "the replay did not finish"
        if self.error is not None:
            raise self.error


@pytest.fixture(scope="module")
def deployment(
    backends: Backends, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """A learner and two predictors over a paced replay; nobody is killed."""
    tmp = tmp_path_factory.mktemp("split")
    cfg = _config(backends, "ok")
    config = write_config(cfg, tmp / "split.yaml")
    common = ["--config", str(config), "--until-idle", "8"]
    try:
        learner = _start(["learner", *common, "--report", str(tmp / "learner.json")], tmp / "l.log")
        predictors = [
            _start(["predictor", *common, "--report", str(tmp / f"p{i}.json")], tmp / f"p{i}.log")
            for i in range(2)
        ]
        _wait_until_serving(cfg, 2)
        # The replay first: the roles' --until-idle counts from their start, and the status
        # command (a new process) may take seconds to import on a loaded machine.
        replay = _Replay(cfg)
        status = _riverline(["status", "--config", str(config)])
        replay.finish()
        for i, proc in enumerate(predictors):
            _finish(proc, tmp / f"p{i}.log")
        _finish(learner, tmp / "l.log")
        found = _collect(cfg, tmp / "learner.json", [tmp / f"p{i}.json" for i in range(2)])
        found.status_while_serving = status.stdout
        yield found
    finally:
        delete_pipelines(backends, {cfg.name})


def _riverline(args: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*riverline_argv(), *args], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done


def test_status_and_model_list_show_the_split_deployment(
    deployment: Deployment, tmp_path: Path
) -> None:
    status = deployment.status_while_serving
    assert "learner" in status
    assert status.count("predictor ") == 2, status  # both, with their model versions
    config = write_config(deployment.cfg, tmp_path / "split.yaml")
    models = _riverline(["model", "list", "--config", str(config)]).stdout
    # The learner publishes its last state on stopping: the newest version is its model's.
    latest = deployment.learner_report["model_version"]
    assert re.search(rf"\b{latest}\b\s*│\s*\*", models), models


def _by_id(records: list[Any]) -> Counter[str]:
    return Counter(json.loads(r.value)["id"] for r in records)


def test_every_event_has_exactly_one_prediction(deployment: Deployment) -> None:
    counts = _by_id(deployment.predictions)
    assert set(counts) == set(deployment.events)
    assert set(counts.values()) == {1}
    # Both predictors served: the group spread the 4 partitions over them.
    assert all(r["events"] > 0 for r in deployment.predictor_reports)
    assert sum(r["events"] for r in deployment.predictor_reports) == len(deployment.events)


def test_predictions_switch_to_the_model_after_the_promotion(deployment: Deployment) -> None:
    report = deployment.learner_report
    assert report["promotions"], "the learner promoted the model"
    promoted_at = report["promotions"][0]["label_index"]
    values = [json.loads(r.value) for r in deployment.predictions]
    by_model = [v for v in values if v["source"] == "model"]
    by_fallback = [v for v in values if v["source"] != "model"]
    assert by_model and by_fallback
    # A version is the number of labels learned: the model serves only from the promotion on.
    assert min(v["model_version"] for v in by_model) >= promoted_at
    assert all(v["mode"] == "serving" for v in by_model)
    assert all(v["pipeline"] == deployment.cfg.name for v in values)


def test_model_version_never_goes_backwards_within_a_partition(deployment: Deployment) -> None:
    by_partition: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for r in deployment.predictions:
        by_partition[r.partition].append((r.offset, json.loads(r.value)["model_version"]))
    assert len(by_partition) == 4
    for partition, seen in by_partition.items():
        versions = [v for _, v in sorted(seen)]
        assert versions == sorted(versions), f"partition {partition} went back"
    assert len({v for seen in by_partition.values() for _, v in seen}) > 5, "versions changed"


def test_no_prediction_comes_from_a_half_loaded_model(deployment: Deployment) -> None:
    """Every prediction equals, byte for byte, what its whole model version serves."""
    cfg = deployment.cfg
    store = ModelVersionStore(
        connect(cfg.redis.url), cfg.name, TEST_SECRET.encode(), 1000, insecure=False
    )
    cores: dict[int, ServingCore] = {}
    checked = 0
    for r in deployment.predictions:
        published = json.loads(r.value)
        version = published["model_version"]
        if version == 0:
            core = cores.setdefault(0, ServingCore(cfg, None))
        else:
            core = cores.get(version) or cores.setdefault(
                version, ServingCore(cfg, store.load(version))
            )
        outcome = core.on_event(deployment.events[published["id"]])
        assert outcome.prediction_json() == r.value, (version, published)
        checked += 1
    assert checked == len(deployment.events)
    assert len(cores) > 5


def test_served_metrics_come_from_the_published_predictions(
    deployment: Deployment, backends: Backends
) -> None:
    report = deployment.learner_report
    served = report["served_from_predictions"]
    assert served["scored"] == report["labels"], served
    assert served["unscored_no_prediction"] == 0
    values = [json.loads(r.value) for r in deployment.predictions]
    assert served["published_by_source"] == dict(
        sorted(Counter(v["source"] for v in values).items())
    )
    # The model and fallback stay prequential: equal to an all-in-one run over the same topics.
    ref = _same_inputs(deployment.cfg, "run")
    try:
        run = consume(ref)
    finally:
        delete_pipelines(backends, {ref.name})
    assert run["labels"] == report["labels"] > 1000
    for role in ("model", "fallback"):
        assert report["metrics"][role] == run["metrics"][role]
    assert report["promotions"] == run["promotions"]


def _same_inputs(cfg: RiverlineConfig, tag: str) -> RiverlineConfig:
    """A pipeline of its own (Redis keys, outputs) reading the same events, labels and
    predictions as ``cfg``."""
    data = json.loads(cfg.model_dump_json())
    name = f"{cfg.name}-{tag}"
    data["name"] = name
    topics = data["kafka"]["topics"]
    for field in ("dead_letters", "review_requests"):
        topics[field] = f"{name}.{field}"
    if tag == "run":
        topics["predictions"] = f"{name}.predictions"  # run serves: its own outputs
    data["checkpoint"]["secret"] = TEST_SECRET
    return load_config(None, data, environ={})


def _holder_pid(cfg: RiverlineConfig) -> int | None:
    holder = Lease(connect(cfg.redis.url), cfg.name, 2000).holder()
    # default_owner(): host:pid:random
    return int(holder.split(" ")[0].split(":")[1]) if holder else None


def test_sigkilled_predictor_and_learner_lose_nothing(backends: Backends, tmp_path: Path) -> None:
    """A predictor SIGKILLed and restarted: no event without a prediction. The active learner
    SIGKILLed: the standby takes over, and its final state equals an uninterrupted learner's
    over the same inputs."""
    cfg = _config(backends, "kill")
    ref = _same_inputs(cfg, "ref")
    config = write_config(cfg, tmp_path / "split.yaml")
    common = ["--config", str(config), "--until-idle", "8"]
    client = connect(cfg.redis.url)
    try:
        learners = {
            i: _start(
                ["learner", *common, "--report", str(tmp_path / f"l{i}.json")],
                tmp_path / f"l{i}.log",
            )
            for i in range(2)
        }
        predictors = [_start(["predictor", *common], tmp_path / f"p{i}.log") for i in range(2)]
        _wait_until_serving(cfg, 2)
        replay = _Replay(cfg)
        models = ModelVersionStore(client, cfg.name, TEST_SECRET.encode(), 1000, insecure=False)
        wait_for(lambda: (models.latest_version() or 0) >= 150, 120, "model versions")
        predictors[0].send_signal(signal.SIGKILL)
        predictors[0].wait(timeout=10)
        predictors.append(_start(["predictor", *common], tmp_path / "p2.log"))
        wait_for(lambda: (models.latest_version() or 0) >= 400, 120, "more model versions")
        active = _holder_pid(cfg)
        killed = [i for i, proc in learners.items() if proc.pid == active]
        assert len(killed) == 1, (active, [p.pid for p in learners.values()])
        learners[killed[0]].send_signal(signal.SIGKILL)
        learners[killed[0]].wait(timeout=10)
        standby = 1 - killed[0]
        replay.finish()
        for i, proc in enumerate(predictors[1:], start=1):
            _finish(proc, tmp_path / f"p{i}.log")
        _finish(learners[standby], tmp_path / f"l{standby}.log")
        assert "resuming from checkpoint" in (tmp_path / f"l{standby}.log").read_text()
        resumed = json.loads((tmp_path / f"l{standby}.json").read_text())

        assert cfg.kafka.bootstrap is not None
        predictions = read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.predictions)
        events = read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.events)
        counts = _by_id(predictions)
        assert set(counts) == {json.loads(r.value)["id"] for r in events}  # none without one
        # The served metric is that of the first copy of each id (docs/tutorials/compose.md,
        # "Delivery": what downstream keeps), whatever the restarted predictor published again.
        first: dict[str, Any] = {}
        for record in sorted(predictions, key=lambda r: (r.partition, r.offset)):
            value = json.loads(record.value)
            first.setdefault(value["id"], value["prediction"])
        labels = [
            json.loads(r.value) for r in read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.labels)
        ]
        hits = [first[label["id"]] == label["label"] for label in labels]
        assert resumed["served_from_predictions"]["scored"] == len(labels) == resumed["labels"]
        assert resumed["metrics"]["served"]["Accuracy"] == sum(hits) / len(hits)

        reference = _learn_again(ref)
        assert learning_state(resumed) == learning_state(reference)
    finally:
        for proc in [*learners.values(), *predictors]:
            if proc.poll() is None:
                proc.kill()
        delete_pipelines(backends, {cfg.name, ref.name})


def _learn_again(cfg: RiverlineConfig) -> dict[str, Any]:
    assert cfg.kafka.bootstrap is not None
    learner = Learner(cfg, cfg.kafka.bootstrap, connect(cfg.redis.url), until_idle=2.0)
    return learner.run()


def test_predictors_serve_on_while_redis_is_down(backends: Backends, tmp_path: Path) -> None:
    """Redis stops mid-stream: the predictor keeps serving the version it holds, and every
    event still gets its prediction."""
    from tests.integration.test_model_versions import RedisServer

    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server on PATH to start (and stop) a private Redis")
    redis_server = RedisServer()
    redis_server.start()
    cfg = _config(backends, "redis")
    data = json.loads(cfg.model_dump_json())
    data["redis"]["url"] = redis_server.url
    data["checkpoint"]["secret"] = TEST_SECRET
    cfg = load_config(None, data, environ={})
    config = write_config(cfg, tmp_path / "split.yaml")
    common = ["--config", str(config), "--until-idle", "8"]
    learner = _start(["learner", *common], tmp_path / "l.log")
    predictor = _start(
        ["predictor", *common, "--report", str(tmp_path / "p.json")], tmp_path / "p.log"
    )
    try:
        _wait_until_serving(cfg, 1)
        replay = _Replay(cfg)
        models = ModelVersionStore(
            connect(cfg.redis.url), cfg.name, TEST_SECRET.encode(), 1000, insecure=False
        )
        from pipeline.cli.status import predictor_statuses

        def serving_300() -> bool:
            found = predictor_statuses(models.client, models.key("predictor:"))
            return bool(found) and found[0].get("model_version", 0) >= 300

        # The predictor itself holds version 300 or newer (not just Redis), then Redis stops.
        wait_for(serving_300, 120, "the predictor serving model version 300 or newer")
        redis_server.stop()
        down_at = time.time() * 1000
        replay.finish()
        _finish(predictor, tmp_path / "p.log")
        assert "Redis unreachable" in (tmp_path / "p.log").read_text()
    finally:
        for proc in (learner, predictor):
            if proc.poll() is None:
                proc.kill()
        redis_server.stop()
        shutil.rmtree(redis_server.dir, ignore_errors=True)
    assert cfg.kafka.bootstrap is not None
    predictions = read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.predictions)
    events = read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.events)
    assert set(_by_id(predictions)) == {json.loads(r.value)["id"] for r in events}
    during = [json.loads(r.value) for r in predictions if r.timestamp > down_at + 500]
    assert len(during) > 100, "served on while Redis was down"
    held = {p["model_version"] for p in during}
    assert len(held) == 1 and held.pop() >= 300  # the version it had, nothing newer
    assert {p["mode"] for p in during} == {"serving"}


def test_split_roles_refuse_what_they_cannot_do(tmp_path: Path, backends: Backends) -> None:
    """Said before anything starts, naming the field: one error line, exit 2."""
    from tests.integration.cli import assert_one_error, cli_env, riverline

    cfg = _config(backends, "refuse")
    data = json.loads(cfg.model_dump_json())
    data["review"]["policy"] = "uncertain"
    review = tmp_path / "review.yaml"
    review.write_text(json.dumps(data))
    for role in ("learner", "predictor"):
        result = riverline([role, "--config", str(review)], cli_env())
        assert_one_error(result, 2, "review.policy", "riverline run")
        plain = write_config(cfg, tmp_path / "plain.yaml")
        result = riverline([role, "--config", str(plain)], cli_env(secret=None))
        assert_one_error(result, 2, "checkpoint.secret")
