"""Model version costs (not a test): snapshot, publish, load, and publish-to-loaded latency.

    python benchmarks/model_versions.py [--repeats 20]

For the demo model after 2,000 Bananas labels and for ``forest.ARFClassifier(n_models=10)``
after 5,000 Agrawal events: the time of ``snapshot_of`` (the deep copy, paid by the learner
between records), of ``ModelVersionStore.publish`` (pickle, compress, sign, one script in the
local Redis), of ``load`` (verify, unpickle: paid by a predictor's watcher thread, off the event
path), and from ``publish`` being called to a :class:`ModelWatcher` having loaded the version
via pub/sub (p50/p99 over ``--repeats`` versions). Wall time; the machine may be shared.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from river import datasets

from pipeline.checkpointing.model_versions import ModelVersionStore
from pipeline.config import RiverlineConfig, load_config
from pipeline.core import LearningCore
from pipeline.schemas import Event, Label
from pipeline.serving.snapshot import snapshot_of
from pipeline.serving.watcher import ModelWatcher
from pipeline.state.redis_client import connect, resolve_redis_url

CASES: dict[str, tuple[str, Any, int]] = {
    "demo-linear": ("", datasets.Bananas, 2000),
    "arf-10": (
        "forest.ARFClassifier(n_models=10, seed=1)",
        lambda: datasets.synth.Agrawal(seed=2),
        5000,
    ),
}


def trained(cfg: RiverlineConfig, dataset: Any, n: int) -> LearningCore:
    core = LearningCore.from_config(cfg)
    for i, (x, y) in enumerate(itertools.islice(dataset(), n)):
        core.on_event(Event(id=str(i), ts=float(i), features=dict(x)))
        core.on_label(Label(id=str(i), ts=float(i), label=y))
    return core


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    redis_url = resolve_redis_url("redis://127.0.0.1:6379/0")
    for case, (spec, dataset, n) in CASES.items():
        name = f"bench-models-{uuid.uuid4().hex[:8]}"
        overrides: dict[str, Any] = {"name": name, "fallback": {"default": False}}
        if spec:
            overrides["model"] = {"spec": spec}
        cfg = load_config(None, overrides, environ={})
        core = trained(cfg, dataset, n)
        store = ModelVersionStore(connect(redis_url), name, b"bench", keep=5)
        snap_ms, publish_ms, load_ms, heard_ms = [], [], [], []
        try:
            with ModelWatcher(store, poll_seconds=3600) as watcher:
                watcher.subscribed.wait(10)
                for _ in range(args.repeats):
                    core.state.learned += 1  # a new version number, same model
                    started = time.perf_counter()
                    snapshot = snapshot_of(core, cfg, {})
                    snap_ms.append((time.perf_counter() - started) * 1e3)
                    wall, started = time.time(), time.perf_counter()
                    store.publish(snapshot)
                    publish_ms.append((time.perf_counter() - started) * 1e3)
                    watcher.wait_for(snapshot.version, 30)
                    loaded_at = watcher.times[snapshot.version].loaded_at or wall
                    heard_ms.append((loaded_at - wall) * 1e3)
                    started = time.perf_counter()
                    store.load(snapshot.version)
                    load_ms.append((time.perf_counter() - started) * 1e3)
                size = (store.meta(snapshot.version) or {}).get("bytes", 0)
        finally:
            store.delete_all()
        print(f"\n{case} ({n} labels, {size / 1024:.0f} KiB blob, {args.repeats} versions)")
        for label, values in (
            ("snapshot_of", snap_ms),
            ("publish", publish_ms),
            ("load (verify+unpickle)", load_ms),
            ("publish call -> loaded", heard_ms),
        ):
            print(
                f"  {label:<28} p50 {statistics.median(values):8.2f} ms"
                f"   p99 {quantile(values, 0.99):8.2f} ms"
            )


if __name__ == "__main__":
    main()
