"""riverline's speed harness (not a test): medians of repeated runs, ratios to the bare loop.

    python benchmarks/run.py [--repeats 3] [--events 5000] [--json out.json]

Stages, each on the same data (River's Bananas, 2 features, repeated to --events) and the same
model spec:

1. bare: River's own loop, predict_proba_one + learn_one per event, no delay;
2. core: riverline's learning core in-process (join, fallback, gating, evaluation), labels
   delayed by 50 events, fed from the replay schedule;
3. end to end: replay published to the broker first, then ``Consumer`` reads events and labels,
   merges, learns, publishes every prediction, checkpoints to Redis;
4. live latency: the producer paced at a fixed rate while the consumer runs, so
   event-to-prediction latency (record timestamp to prediction published) is a real
   distribution; reported as p50/p90/p99.

Throughputs are events per second; the ratio column divides by the bare loop measured in the
same run, so machines of different speeds give comparable ratios.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from river import datasets

from consumers.run import Consumer
from pipeline.checkpointing.store import CheckpointStore
from pipeline.config import RiverlineConfig, load_config
from pipeline.core import LearningCore
from pipeline.kafka.embedded import EmbeddedBroker
from pipeline.models import parse_model_spec
from pipeline.schemas import Event, Label
from pipeline.state.redis_client import connect, resolve_redis_url
from producers.replay import publish
from producers.schedule import Emission, LabelDelay, schedule
from producers.sources import SourceRecord

SPEC = "preprocessing.StandardScaler | linear_model.LogisticRegression"
DELAY = 50


def records(n: int) -> list[SourceRecord]:
    base = list(datasets.Bananas())
    return [
        SourceRecord(id=str(i), ts=1_700_000_000.0 + i, features=dict(x), label=y)
        for i, (x, y) in zip(range(n), itertools.cycle(base), strict=False)
    ]


def bare_loop(data: list[SourceRecord]) -> float:
    model: Any = parse_model_spec(SPEC)
    started = time.perf_counter()
    for r in data:
        model.predict_proba_one(r.features)
        model.learn_one(r.features, r.label)
    return len(data) / (time.perf_counter() - started)


def core_loop(data: list[SourceRecord], cfg: RiverlineConfig) -> float:
    emissions = list(schedule(iter(data), LabelDelay(events=DELAY)))
    # Parse outside the timed part: the edge's validation is measured end to end.
    parsed = [
        Event(id=e.record.id, ts=e.ts, features=e.record.features)
        if e.kind == "event"
        else Label(id=e.record.id, ts=e.ts, label=e.record.label)  # type: ignore[arg-type]
        for e in emissions
    ]
    core = LearningCore.from_config(cfg)
    started = time.perf_counter()
    for item in parsed:
        if isinstance(item, Event):
            core.on_event(item)
        else:
            core.on_label(item)
    return len(data) / (time.perf_counter() - started)


def config(bootstrap: str, redis_url: str) -> RiverlineConfig:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    return load_config(
        None,
        {
            "name": name,
            "kafka": {
                "bootstrap": bootstrap,
                "partitions": 1,
                "topics": {
                    t: f"{name}.{t}"
                    for t in ("events", "labels", "predictions", "dead_letters", "review_requests")
                },
            },
            "redis": {"url": redis_url},
            "model": {"spec": SPEC},
            "evaluation": {"metric": "Accuracy"},
            "fallback": {"default": 0},
            "gating": {"min_labels": 200, "window": 500},
            "checkpoint": {"secret": "bench", "every_labels": 5000},
            "ordering": {"max_idle_ms": 200},
        },
        environ={},
    )


def end_to_end(data: list[SourceRecord], bootstrap: str, redis_url: str) -> dict[str, Any]:
    cfg = config(bootstrap, redis_url)
    publish(cfg, bootstrap, schedule(iter(data), LabelDelay(events=DELAY)))
    client = connect(redis_url)
    consumer = Consumer(cfg, bootstrap, client, until_idle=0.5)
    report = consumer.run()
    CheckpointStore(client, cfg.name, None).delete_all()
    assert report["events"] == len(data), report
    # Active time: first record fetched to last processed (the group join is not throughput).
    return {"events_per_s": len(data) / report["run"]["active_seconds"]}


def live_latency(
    data: list[SourceRecord], bootstrap: str, redis_url: str, rate: float
) -> dict[str, Any]:
    """Producer paced at ``rate`` events/s while the consumer runs."""
    cfg = config(bootstrap, redis_url)
    client = connect(redis_url)
    consumer = Consumer(cfg, bootstrap, client, until_idle=1.5)
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(report=consumer.run()))
    thread.start()
    time.sleep(4.0)  # let the consumer join its group first

    def paced() -> Iterator[Emission]:
        started = time.monotonic()
        for emission in schedule(iter(data), LabelDelay(events=DELAY)):
            if emission.kind == "event":
                due = started + int(emission.record.id) / rate
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            yield emission

    publish(cfg, bootstrap, paced())
    thread.join()
    CheckpointStore(client, cfg.name, None).delete_all()
    return dict(result["report"]["run"]["latency_ms"]["event_to_prediction"])


def median_of(repeats: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s for the latency run")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    data = records(args.events)
    cfg_core = config("unused:9092", "redis://unused")
    results: dict[str, Any] = {"events": args.events, "repeats": args.repeats, "model": SPEC}
    results["bare_events_per_s"] = median_of(args.repeats, lambda: bare_loop(data))
    results["core_events_per_s"] = median_of(args.repeats, lambda: core_loop(data, cfg_core))
    redis_url = resolve_redis_url("redis://127.0.0.1:6379/0")
    with EmbeddedBroker() as broker:
        runs = [end_to_end(data, broker.bootstrap, redis_url) for _ in range(args.repeats)]
        results["end_to_end_events_per_s"] = statistics.median(r["events_per_s"] for r in runs)
        results["latency_ms_at_rate"] = {
            "rate": args.rate,
            **live_latency(data[: int(args.rate * 5)], broker.bootstrap, redis_url, args.rate),
        }
    bare = results["bare_events_per_s"]
    print(f"{'stage':<14}{'events/s':>12}{'ratio to bare':>16}")
    for stage in ("bare", "core", "end_to_end"):
        value = results[f"{stage}_events_per_s"]
        print(f"{stage:<14}{value:>12.0f}{value / bare:>16.2f}")
    lat = results["latency_ms_at_rate"]
    print(
        f"event-to-prediction latency at {lat['rate']:.0f} events/s: p50 {lat['p50']:.1f} ms, "
        f"p90 {lat['p90']:.1f} ms, p99 {lat['p99']:.1f} ms (n={lat['count']})"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
