"""Checkpoint costs and recovery time (not a test): medians of repeated runs.

    python benchmarks/checkpoints.py [--repeats 5]

1. write and load time and size of a checkpoint (signed, compressed, in the local Redis) for
   the demo model after River's Phishing, and for a Hoeffding tree after 50,000 Agrawal events;
2. recovery: a ``riverline run`` process is SIGKILLed mid-stream and started again; the time
   from the kill to the first new prediction on the predictions topic, and its parts (the dead
   writer's lease must expire, the dead group member's session must time out).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kafka import KafkaConsumer, TopicPartition
from river import datasets

from pipeline.checkpointing.store import CheckpointStore
from pipeline.config import RiverlineConfig, load_config
from pipeline.core import LearningCore
from pipeline.kafka.embedded import EmbeddedBroker
from pipeline.schemas import Event, Label
from pipeline.state.redis_client import connect, resolve_redis_url
from producers.replay import replay
from producers.schedule import parse_delay

SECRET = b"bench"


def trained_core(spec: str, data: Any, metric: str) -> LearningCore:
    cfg = load_config(
        None,
        {"name": "bench", "model": {"spec": spec}, "evaluation": {"metric": metric}},
        environ={},
    )
    core = LearningCore.from_config(cfg)
    for i, (x, y) in enumerate(data):
        core.on_event(Event(id=str(i), ts=float(i), features=x))
        core.on_label(Label(id=str(i), ts=float(i), label=y))
    return core


def checkpoint_costs(core: LearningCore, redis_url: str, repeats: int) -> dict[str, Any]:
    store = CheckpointStore(connect(redis_url), f"bench-{uuid.uuid4().hex[:8]}", SECRET, keep=2)
    offsets = {("events", 0): 1000, ("labels", 0): 1000}
    writes, loads = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        version = store.save(core.state, offsets)
        writes.append(time.perf_counter() - started)
        started = time.perf_counter()
        store.load(version)
        loads.append(time.perf_counter() - started)
    meta = store.meta(version) or {}
    store.delete_all()
    return {
        "write_ms": statistics.median(writes) * 1000,
        "load_ms": statistics.median(loads) * 1000,
        "bytes": meta["bytes"],
        "raw_bytes": meta["raw_bytes"],
    }


def recovery(bootstrap: str, redis_url: str, lease_ttl_ms: int) -> dict[str, float]:
    name = f"bench-rec-{uuid.uuid4().hex[:6]}"
    cfg: RiverlineConfig = load_config(
        None,
        {
            "name": name,
            "kafka": {
                "bootstrap": bootstrap,
                "topics": {
                    t: f"{name}.{t}"
                    for t in ("events", "labels", "predictions", "dead_letters", "review_requests")
                },
            },
            "redis": {"url": redis_url},
            "model": {"spec": "forest.ARFClassifier(seed=1, n_models=5)"},
            "checkpoint": {"every_labels": 100, "lease_ttl_ms": lease_ttl_ms},
        },
        environ={},
    )
    replay(cfg, bootstrap, "river:Bananas", parse_delay("30"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        data = json.loads(cfg.model_dump_json())
        data["checkpoint"]["secret"] = None
        import yaml

        path.write_text(yaml.safe_dump(data))
        env = {**os.environ, "RIVERLINE_CHECKPOINT_SECRET": SECRET.decode()}
        args = [
            sys.executable,
            "-m",
            "pipeline.cli",
            "run",
            "--config",
            str(path),
            "--until-idle",
            "3",
        ]
        store = CheckpointStore(connect(redis_url), name, SECRET)
        first = subprocess.Popen(
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        while store.latest_version() is None:
            time.sleep(0.01)
        tail = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        tp = TopicPartition(cfg.kafka.topics.predictions, 0)
        tail.assign([tp])
        tail.seek_to_end(tp)
        tail.poll(timeout_ms=200)
        first.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        first.wait()
        tail.poll(timeout_ms=500)  # drain what the dead process had in flight
        second = subprocess.Popen(
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        restarted = time.monotonic()
        while True:
            if tail.poll(timeout_ms=50):
                recovered = time.monotonic()
                break
        second.send_signal(signal.SIGTERM)
        second.wait()
        tail.close()
        store.delete_all()
    return {
        "kill_to_first_prediction_s": recovered - killed,
        "restart_to_first_prediction_s": recovered - restarted,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    redis_url = resolve_redis_url("redis://127.0.0.1:6379/0")
    demo = trained_core(
        "preprocessing.StandardScaler | linear_model.LogisticRegression",
        datasets.Phishing(),
        "ROCAUC",
    )
    tree = trained_core(
        "tree.HoeffdingTreeClassifier", datasets.synth.Agrawal(seed=1).take(50_000), "Accuracy"
    )
    results: dict[str, Any] = {
        "demo_model_after_phishing": checkpoint_costs(demo, redis_url, args.repeats),
        "hoeffding_tree_after_50k_agrawal": checkpoint_costs(tree, redis_url, args.repeats),
    }
    with EmbeddedBroker() as broker:
        results["recovery_lease_ttl_2s"] = recovery(broker.bootstrap, redis_url, 2000)
        results["recovery_lease_ttl_10s"] = recovery(broker.bootstrap, redis_url, 10000)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
