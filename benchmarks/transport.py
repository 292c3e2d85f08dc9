"""The Kafka edge, per transport (not a test): end to end, latency, replay publish rate.

    python benchmarks/transport.py [--repeats 3] [--events 20000] [--json out.json]
        [--clients kafka-python,confluent] [--datasets Shuttle,Bananas] [--replay-only]
        [--e2e-only]

For each Kafka client (``kafka.client``), on the embedded broker and the local Redis:

1. end to end: the replay published first, then ``Consumer`` reads events and labels, merges,
   learns, publishes every prediction and checkpoints; events/s over its active time (first
   record fetched to last processed), beside the bare River predict+learn loop measured in the
   same run on the same data (the ratio);
2. latency: a producer in another process paced at a fixed rate of events while the consumer
   runs; event-to-prediction latency (send time header to prediction sent) p50/p90/p99;
3. replay publish: ``producers.replay.publish`` at ``--speed max`` into fresh topics,
   records/s (events and labels) until every record is acknowledged.

Medians of ``--repeats`` runs. The machine may be shared: note the load with the figures.
``--replay-only`` measures only 3., after an unmeasured warm-up run per client, the clients
interleaved within each repeat, with the process's CPU time per record beside the rate (CPU
time includes the topics' creation and the producer's connection, which the rate does not).
``--e2e-only`` measures only 1., the same way: a warm-up run per client, the clients interleaved,
with the consumer's CPU time per event (its ``run()``, group join and idle stop included).
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from river import datasets
from run import paced_publish

from consumers.run import Consumer
from pipeline.checkpointing.store import CheckpointStore
from pipeline.config import RiverlineConfig, load_config
from pipeline.kafka.embedded import EmbeddedBroker
from pipeline.kafka.transport import confluent_installed, make_transport
from pipeline.models import parse_model_spec
from pipeline.state.redis_client import connect, resolve_redis_url
from producers.replay import publish
from producers.schedule import LabelDelay, schedule
from producers.sources import SourceRecord

SPEC = "preprocessing.StandardScaler | linear_model.LogisticRegression"
DELAY = 50
TOPICS = ("events", "labels", "predictions", "dead_letters", "review_requests")


def records(dataset: str, n: int) -> list[SourceRecord]:
    base = list(getattr(datasets, dataset)())
    return [
        SourceRecord(id=str(i), ts=1_700_000_000.0 + i, features=dict(x), label=bool(y))
        for i, (x, y) in zip(range(n), itertools.cycle(base), strict=False)
    ]


def bare_loop(data: list[SourceRecord]) -> float:
    model: Any = parse_model_spec(SPEC)
    started = time.perf_counter()
    for r in data:
        model.predict_proba_one(r.features)
        model.learn_one(r.features, r.label)
    return len(data) / (time.perf_counter() - started)


def config(bootstrap: str, redis_url: str, client: str) -> RiverlineConfig:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    return load_config(
        None,
        {
            "name": name,
            "kafka": {
                "bootstrap": bootstrap,
                "client": client,
                "partitions": 1,
                "topics": {t: f"{name}.{t}" for t in TOPICS},
            },
            "redis": {"url": redis_url},
            "model": {"spec": SPEC},
            "evaluation": {"metric": "Accuracy"},
            "fallback": {"default": False},
            "gating": {"min_labels": 200, "window": 500},
            "checkpoint": {"secret": "bench", "every_labels": 5000},
        },
        environ={},
    )


def cleanup(cfg: RiverlineConfig, bootstrap: str, redis_url: str) -> None:
    CheckpointStore(connect(redis_url), cfg.name, None).delete_all()
    transport = make_transport(cfg.kafka, bootstrap)
    transport.delete_topics([getattr(cfg.kafka.topics, t) for t in TOPICS])


def end_to_end(
    data: list[SourceRecord], bootstrap: str, redis_url: str, client: str
) -> dict[str, float]:
    cfg = config(bootstrap, redis_url, client)
    published = publish(cfg, bootstrap, schedule(iter(data), LabelDelay(events=DELAY)))
    consumer = Consumer(cfg, bootstrap, connect(redis_url), until_idle=0.5)
    cpu = time.process_time()
    report = consumer.run()
    cpu = time.process_time() - cpu
    cleanup(cfg, bootstrap, redis_url)
    assert report["events"] == len(data), report
    return {
        "events_per_s": len(data) / report["run"]["active_seconds"],
        "replay_records_per_s": (published.events + published.labels) / published.seconds,
        "consumer_cpu_us_per_event": cpu / len(data) * 1e6,
    }


def replay_only(
    data: list[SourceRecord], bootstrap: str, redis_url: str, client: str
) -> dict[str, float]:
    """``publish`` alone into fresh topics: records/s (wall) and CPU microseconds per record."""
    cfg = config(bootstrap, redis_url, client)
    cpu = time.process_time()
    published = publish(cfg, bootstrap, schedule(iter(data), LabelDelay(events=DELAY)))
    cpu = time.process_time() - cpu
    cleanup(cfg, bootstrap, redis_url)
    count = published.events + published.labels
    return {"records_per_s": count / published.seconds, "cpu_us_per_record": cpu / count * 1e6}


Measure = Callable[[list[SourceRecord], str, str, str], dict[str, float]]


def main_interleaved(
    args: argparse.Namespace,
    clients: list[str],
    redis_url: str,
    measure: Measure,
    describe: Callable[[dict[str, Any]], str],
    rate_key: str,
) -> None:
    """``--e2e-only`` and ``--replay-only``: ``measure`` per dataset, the clients interleaved in
    each repeat, medians; ``rate_key`` names the figure listed run by run."""
    results: dict[str, Any] = {"events": args.events, "repeats": args.repeats}
    results["load_average"] = os.getloadavg()
    with EmbeddedBroker() as broker:
        # A fresh broker's first topics and a process's first connections are slower: not what
        # is measured.
        for client in clients:
            measure(records("Bananas", 2000), broker.bootstrap, redis_url, client)
        for dataset in args.datasets.split(","):
            data = records(dataset, args.events)
            runs: dict[str, list[dict[str, float]]] = {c: [] for c in clients}
            for _ in range(args.repeats):
                for client in clients:
                    runs[client].append(measure(data, broker.bootstrap, redis_url, client))
            for client in clients:
                row: dict[str, Any] = {
                    k: median([r[k] for r in runs[client]]) for k in runs[client][0]
                }
                row["runs"] = [r[rate_key] for r in runs[client]]
                results[f"{dataset}/{client}"] = row
                print(
                    f"{dataset:<8} {client:<13} {describe(row)} "
                    f"({', '.join(f'{r:.0f}' for r in row['runs'])})",
                    flush=True,
                )
    results["load_average_after"] = os.getloadavg()
    print(f"load average before {results['load_average']}, after {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def live_latency(
    data: list[SourceRecord], bootstrap: str, redis_url: str, client: str, rate: float
) -> dict[str, Any]:
    """A producer process paced at ``rate`` events/s while the consumer runs."""
    cfg = config(bootstrap, redis_url, client)
    make_transport(cfg.kafka, bootstrap).ensure_topics(
        [getattr(cfg.kafka.topics, t) for t in TOPICS]
    )
    consumer = Consumer(cfg, bootstrap, connect(redis_url), until_idle=1.5)
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(report=consumer.run()))
    thread.start()
    deadline = time.monotonic() + 30
    while not consumer.lags and time.monotonic() < deadline:  # joined and fetching
        time.sleep(0.1)
    time.sleep(1.0)
    producer = multiprocessing.get_context("fork").Process(
        target=paced_publish, args=(cfg, bootstrap, data, rate)
    )
    producer.start()
    producer.join()
    thread.join()
    cleanup(cfg, bootstrap, redis_url)
    return dict(result["report"]["run"]["latency_ms"]["event_to_prediction"])


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--clients", default="kafka-python,confluent")
    parser.add_argument("--datasets", default="Shuttle,Bananas")
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--replay-only", action="store_true", help="only the replay publish rate")
    parser.add_argument("--e2e-only", action="store_true", help="only the end-to-end rate")
    args = parser.parse_args()
    clients = [c for c in args.clients.split(",") if c != "confluent" or confluent_installed()]
    redis_url = resolve_redis_url("redis://127.0.0.1:6379/0")
    if args.replay_only:
        main_interleaved(
            args,
            clients,
            redis_url,
            replay_only,
            lambda row: (
                f"replay {row['records_per_s']:>8.0f} rec/s, "
                f"cpu {row['cpu_us_per_record']:.1f} us/rec"
            ),
            "records_per_s",
        )
        return
    if args.e2e_only:
        main_interleaved(
            args,
            clients,
            redis_url,
            end_to_end,
            lambda row: (
                f"end to end {row['events_per_s']:>7.0f} ev/s, "
                f"consumer cpu {row['consumer_cpu_us_per_event']:.1f} us/ev"
            ),
            "events_per_s",
        )
        return
    results: dict[str, Any] = {
        "events": args.events,
        "repeats": args.repeats,
        "model": SPEC,
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "end_to_end": {},
        "latency_ms": {},
    }
    with EmbeddedBroker() as broker:
        for dataset in args.datasets.split(","):
            data = records(dataset, args.events)
            for client in clients:
                bare, e2e, replay = [], [], []
                for _ in range(args.repeats):
                    bare.append(bare_loop(data))
                    run = end_to_end(data, broker.bootstrap, redis_url, client)
                    e2e.append(run["events_per_s"])
                    replay.append(run["replay_records_per_s"])
                row = {
                    "bare_events_per_s": median(bare),
                    "events_per_s": median(e2e),
                    "ratio_to_bare": median([e / b for e, b in zip(e2e, bare, strict=True)]),
                    "replay_records_per_s": median(replay),
                }
                results["end_to_end"][f"{dataset}/{client}"] = row
                print(
                    f"{dataset:<8} {client:<13} bare {row['bare_events_per_s']:>8.0f} ev/s  "
                    f"end to end {row['events_per_s']:>7.0f} ev/s ({row['ratio_to_bare']:.2f} x)"
                    f"  replay {row['replay_records_per_s']:>7.0f} rec/s",
                    flush=True,
                )
        for client in clients:
            for rate in (1000.0, 10_000.0) if client == "confluent" else (1000.0,):
                data = records("Shuttle", int(rate * args.latency_seconds))
                runs = [
                    live_latency(data, broker.bootstrap, redis_url, client, rate)
                    for _ in range(args.repeats)
                ]
                row = {
                    q: median([r[q] for r in runs]) for q in ("p50", "p90", "p99") if q in runs[0]
                }
                results["latency_ms"][f"{client}@{rate:.0f}"] = row
                print(
                    f"latency {client:<13} at {rate:>6.0f} ev/s: p50 {row['p50']:.1f} ms, "
                    f"p90 {row['p90']:.1f} ms, p99 {row['p99']:.1f} ms",
                    flush=True,
                )
    results["load_average_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
