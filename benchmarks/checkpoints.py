"""Checkpoint costs and recovery time (not a test): medians of repeated runs.

    python benchmarks/checkpoints.py [--repeats 5] [--stall-only] [--rate 150]

1. write and load time and size of a checkpoint (signed, compressed, in the local Redis) for
   the demo model after River's Phishing, and for a Hoeffding tree after 50,000 Agrawal events;
2. recovery: a ``riverline run`` process is SIGKILLed mid-stream and started again; the time
   from the kill to the first new prediction on the predictions topic, and its parts (the dead
   writer's lease must expire, the dead group member's session must time out);
3. the serving stall a checkpoint causes with a big model: ``forest.ARFClassifier(n_models=10)``
   after 5,000 Agrawal events, then events paced at ``--rate`` per second through the core
   in-process (labels 50 events late), a checkpoint written to Redis on the event path every
   ``--every-labels`` labels, as ``riverline run`` does. Latency of an event: from its
   scheduled arrival to its prediction. p50/p99/max with no checkpoints, with zlib level 1
   always (the previous behaviour), with the level chosen by
   :func:`pipeline.checkpointing.store.compression_level` (synchronous), and written by a
   forked child (``checkpoint.background``: the event path pays for the fork, then polls);
   each a median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import pickle
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

from pipeline.checkpointing import store as store_module
from pipeline.checkpointing.background import BackgroundSave
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


def save_parts(core: LearningCore, level: int | None) -> dict[str, float]:
    """Where a checkpoint's time goes (CPU ms: these are CPU-bound, and CPU time is what a
    shared machine does not inflate): pickle, compress, sign; and the sizes."""
    started = time.process_time()
    payload = pickle.dumps(core.state, protocol=pickle.HIGHEST_PROTOCOL)
    pickled = time.process_time()
    chosen = store_module.compression_level(payload) if level is None else level
    blob = store_module.zlib.compress(payload, chosen)
    compressed = time.process_time()
    hmac.new(SECRET, blob, hashlib.sha256).hexdigest()
    signed = time.process_time()
    return {
        "pickle_ms": (pickled - started) * 1000,
        "compress_ms": (compressed - pickled) * 1000,
        "sign_ms": (signed - compressed) * 1000,
        "level": chosen,
        "raw_mib": len(payload) / 2**20,
        "mib": len(blob) / 2**20,
    }


def paced_stall(
    state_bytes: bytes,
    redis_url: str,
    rate: float,
    events: int,
    every_labels: int | None,
    level: int | None,
    background: bool = False,
) -> dict[str, float]:
    """Events at ``rate``/s through a core restored from ``state_bytes``; checkpoints every
    ``every_labels`` labels (None: none), on the event path or (``background``) from a forked
    child, one at a time, as the writer does. Latency percentiles in ms."""
    cfg = load_config(
        None,
        {
            "name": "bench",
            "model": {"spec": "forest.ARFClassifier(seed=1, n_models=10)"},
            "evaluation": {"metric": "Accuracy"},
        },
        environ={},
    )
    core = LearningCore.from_config(cfg, pickle.loads(state_bytes))
    store = CheckpointStore(connect(redis_url), f"bench-{uuid.uuid4().hex[:8]}", SECRET, keep=2)
    original = store_module.compression_level
    if level is not None:
        store_module.compression_level = lambda payload: level
    data = list(datasets.synth.Agrawal(seed=2).take(events))
    offset = 1_000_000
    latencies: list[float] = []
    saves: list[float] = []
    forks: list[float] = []
    labels_at_checkpoint = 0
    in_flight: BackgroundSave | None = None

    def collected(block: bool) -> None:
        nonlocal in_flight
        outcome = in_flight.poll(block) if in_flight is not None else None
        if outcome is not None:
            assert outcome.version is not None, outcome.error
            saves.append(outcome.milliseconds)
            in_flight = None

    try:
        started = time.perf_counter()
        for i, (x, _) in enumerate(data):
            due = started + i / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            core.on_event(Event(id=str(offset + i), ts=float(offset + i), features=x))
            latencies.append((time.perf_counter() - due) * 1000)
            j = i - 50
            if j >= 0:
                core.on_label(Label(id=str(offset + j), ts=float(offset + i), label=data[j][1]))
                if every_labels and core.state.labels - labels_at_checkpoint >= every_labels:
                    save_started = time.perf_counter()
                    written = {("events", 0): i + 1, ("labels", 0): j + 1}
                    if background:
                        collected(block=True)  # one write at a time
                        in_flight = BackgroundSave.start(store, core.state, written, {}, None)
                        forks.append((time.perf_counter() - save_started) * 1000)
                    else:
                        store.save(core.state, written)
                        saves.append((time.perf_counter() - save_started) * 1000)
                    labels_at_checkpoint = core.state.labels
            collected(block=False)
        collected(block=True)
    finally:
        store_module.compression_level = original
        store.delete_all()
    ordered = sorted(latencies)
    return {
        "p50_ms": ordered[len(ordered) // 2],
        "p99_ms": ordered[int(len(ordered) * 0.99)],
        "max_ms": ordered[-1],
        "checkpoints": len(saves),
        "checkpoint_ms": statistics.median(saves) if saves else 0.0,
        "fork_ms": statistics.median(forks) if forks else 0.0,
    }


def stall(redis_url: str, repeats: int, rate: float, events: int, every: int) -> dict[str, Any]:
    forest = trained_core(
        "forest.ARFClassifier(seed=1, n_models=10)",
        datasets.synth.Agrawal(seed=1).take(5000),
        "Accuracy",
    )
    state_bytes = pickle.dumps(forest.state, protocol=pickle.HIGHEST_PROTOCOL)
    out: dict[str, Any] = {"rate": rate, "events": events, "every_labels": every}
    for name, level in (("level_1_always", 1), ("level_chosen", None)):
        out[f"parts_{name}"] = median_dict([save_parts(forest, level) for _ in range(repeats)])
    variants = (("no_checkpoints", None, None), ("level_1_always", every, 1))
    variants += (("level_chosen", every, None), ("background", every, None))
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in variants}
    for _ in range(repeats):  # interleaved: a busy neighbour slows each variant alike
        for name, every_labels, level in variants:
            run = paced_stall(
                state_bytes,
                redis_url,
                rate,
                events,
                every_labels,
                level,
                background=name == "background",
            )
            runs[name].append(run)
    for name, results in runs.items():
        out[name] = median_dict(results)
    return out


def median_dict(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stall-only", action="store_true", help="only the serving stall")
    parser.add_argument("--rate", type=float, default=150.0, help="events/s for the stall run")
    parser.add_argument("--stall-events", type=int, default=3000)
    parser.add_argument("--every-labels", type=int, default=1000)
    args = parser.parse_args()
    redis_url = resolve_redis_url("redis://127.0.0.1:6379/0")
    if args.stall_only:
        repeats = min(args.repeats, 3)
        result = stall(redis_url, repeats, args.rate, args.stall_events, args.every_labels)
        print(json.dumps({"forest_checkpoint_stall": result}, indent=2))
        return
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
    results["forest_checkpoint_stall"] = stall(
        redis_url, min(args.repeats, 3), args.rate, args.stall_events, args.every_labels
    )
    with EmbeddedBroker() as broker:
        results["recovery_lease_ttl_2s"] = recovery(broker.bootstrap, redis_url, 2000)
        results["recovery_lease_ttl_10s"] = recovery(broker.bootstrap, redis_url, 10000)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
