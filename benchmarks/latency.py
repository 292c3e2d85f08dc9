"""Where event-to-prediction latency goes (not a test): a per-step breakdown per Kafka client.

    python benchmarks/latency.py [--clients kafka-python,confluent] [--rates 1000]
        [--seconds 5] [--repeats 3] [--raw] [--set kafka.fetch_max_wait_ms=1 ...]
        [--publisher-linger-ms 1] [--json out.json]

On the embedded broker and the local Redis, a producer process (``run.paced_publish``: events
at ``--rate`` per second, each label 50 events late) publishes River's Shuttle while:

- ``--raw``: a bare client of the same library subscribes to the same topics and polls; the
  latency is the send time (``sent_ms`` header) to the record being returned by ``poll``: the
  client's and the broker's share, with nothing of riverline in it;
- otherwise: riverline's ``Consumer`` runs, its steps stamped from inside (wall clock, ms):
  ``sent`` (the header) -> ``fetched`` (the poll that returned the record) -> ``popped`` (out of
  the ordered merge, into ``_process``) -> ``predicted`` (the prediction handed to the
  producer). The sum is what the consumer reports as event-to-prediction latency.

``--set section.field=value`` overrides the consumer's configuration (e.g. the fetch wait or the
merge's idle wait), ``--publisher-linger-ms`` the paced publisher's linger. Medians over
``--repeats`` runs of each quantile.

``--outside`` measures instead what a downstream reader sees (issue 22; ``outside.py``): events
at ``--rates`` per second with the wall clock as their time, labels 100 events later, a
separate process reading the predictions topic; ``--servers`` (default ``bare,riverline``) run
alternately, ``--repeats`` rounds, medians of p50/p90/p99 and ratios to the bare loop:

    python benchmarks/latency.py --outside [--servers bare,bare-labels,riverline]
        [--seconds 10] [--repeats 3] [--warmup 500] [--set ordering.serve=immediate ...]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import outside
from outside import quantiles
from run import paced_publish
from transport import TOPICS, cleanup, records

import consumers.inputs as inputs_module
from consumers.run import Consumer
from pipeline.config import RiverlineConfig, load_config
from pipeline.kafka.embedded import EmbeddedBroker
from pipeline.kafka.records import SENT_HEADER, Incoming, int_header
from pipeline.kafka.transport import make_transport
from pipeline.state.redis_client import connect, resolve_redis_url

TO_ITEMS = inputs_module.to_items
SPEC = "preprocessing.StandardScaler | linear_model.LogisticRegression"


def nested(overrides: list[str]) -> dict[str, Any]:
    """``a.b=3`` strings to a nested dict (values parsed as JSON when they parse).

    >>> nested(["kafka.fetch_max_wait_ms=1", "ordering.max_idle_ms=0"])
    {'kafka': {'fetch_max_wait_ms': 1}, 'ordering': {'max_idle_ms': 0}}
    """
    out: dict[str, Any] = {}
    for item in overrides:
        path, _, raw = item.partition("=")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *parents, leaf = path.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def config(
    bootstrap: str, redis_url: str, client: str, overrides: dict[str, Any]
) -> RiverlineConfig:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    raw: dict[str, Any] = {
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
    }
    for section, fields in overrides.items():
        raw.setdefault(section, {}).update(fields)
    return load_config(None, raw, environ={})


PUBLISHER: dict[str, Any] = {}  # kafka.* settings of the paced publisher (--publisher-*)


def publisher_config(cfg: RiverlineConfig) -> RiverlineConfig:
    """The consumer's configuration with the publisher's own Kafka settings."""
    if not PUBLISHER:
        return cfg
    return cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update=PUBLISHER)})


def acknowledged_publish(
    cfg: RiverlineConfig, bootstrap: str, data: list[Any], rate: float, out: str
) -> None:
    """``run.paced_publish``, with each event's send time to its acknowledgement written to
    ``out`` (JSON, ms). confluent-kafka serves delivery reports only inside ``poll``, so here
    it is polled after every send (kafka-python acknowledges on its IO thread)."""
    from pipeline.kafka.confluent import ConfluentProducer
    from pipeline.kafka.kafka_python import KafkaPythonProducer

    acked: list[float] = []
    events = cfg.kafka.topics.events

    def stamping(cls: Any) -> None:
        original = cls.send

        def send(self: Any, topic: str, key: Any, value: Any, **kwargs: Any) -> None:
            callback = kwargs.get("on_delivery")
            sent = int_header(SimpleNamespace(**kwargs), SENT_HEADER) if topic == events else None

            def delivered(error: Exception | None) -> None:
                if error is None and sent is not None:
                    acked.append(time.time() * 1000.0 - sent)
                if callback is not None:
                    callback(error)

            original(self, topic, key, value, **(kwargs | {"on_delivery": delivered}))
            if cls is ConfluentProducer:
                self.client.poll(0)

        cls.send = send

    stamping(ConfluentProducer)
    stamping(KafkaPythonProducer)
    paced_publish(cfg, bootstrap, data, rate)
    Path(out).write_text(json.dumps(acked))


def start_publisher(
    cfg: RiverlineConfig, bootstrap: str, rate: float, seconds: float, out: str
) -> multiprocessing.process.BaseProcess:
    data = records("Shuttle", int(rate * seconds))
    producer = multiprocessing.get_context("fork").Process(
        target=acknowledged_publish, args=(cfg, bootstrap, data, rate, out)
    )
    producer.start()
    return producer


def read_acknowledged(out: str) -> dict[str, Any]:
    path = Path(out)
    acked = json.loads(path.read_text()) if path.exists() else []
    path.unlink(missing_ok=True)
    return quantiles(acked)


def raw_round_trip(
    bootstrap: str,
    redis_url: str,
    client: str,
    rate: float,
    seconds: float,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    """Send time to ``poll`` returning the event, through a bare client of the library."""
    cfg = config(bootstrap, redis_url, client, overrides)
    transport = make_transport(cfg.kafka, bootstrap)
    topics = cfg.kafka.topics
    transport.ensure_topics([getattr(topics, t) for t in TOPICS])
    consumer = transport.consumer(cfg.name)
    assigned: list[Any] = []
    consumer.subscribe([topics.events, topics.labels], assigned.extend, lambda _p: None)
    deadline = time.monotonic() + 30
    while not assigned and time.monotonic() < deadline:
        consumer.poll(100)
    consumer.poll(100)
    out = tempfile.mktemp(prefix="riverline-acked-", suffix=".json")
    producer = start_publisher(publisher_config(cfg), bootstrap, rate, seconds, out)
    latencies: list[float] = []
    idle_since = time.monotonic()
    while producer.is_alive() or time.monotonic() - idle_since < 1.0:
        batches = consumer.poll(100)
        now_ms = time.time() * 1000.0
        for (topic, _), batch in batches.items():
            if topic != topics.events:
                continue
            for r in batch:
                sent = int_header(r, SENT_HEADER)
                if sent is not None:
                    latencies.append(now_ms - sent)
        if batches:
            idle_since = time.monotonic()
    producer.join()
    consumer.close()
    cleanup(cfg, bootstrap, redis_url)
    return {"sent_to_acked": read_acknowledged(out), "sent_to_fetched": quantiles(latencies)}


STEPS = ("sent_to_fetched", "fetched_to_popped", "popped_to_predicted", "sent_to_predicted")


class StampedConsumer(Consumer):
    """The real consumer, with each event's steps stamped (wall clock, ms)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetched_at: dict[tuple[str, int, int], float] = {}
        self.steps: dict[str, list[float]] = {s: [] for s in STEPS}

    def on_started(self) -> None:
        super().on_started()
        fetched, steps = self.fetched_at, self.steps
        original_to_items = TO_ITEMS
        assert self.processor is not None
        original_process = self.processor.process

        def stamped(records: Any, partition: Any, kind: str, validator: Any) -> Any:
            # Right after the poll that returned the records: its batch is parsed at once.
            now = time.time() * 1000.0
            for record in records:
                fetched[(record.topic, record.partition, record.offset)] = now
            return original_to_items(records, partition, kind, validator)

        def process(incoming: Incoming) -> None:
            popped = time.time() * 1000.0
            original_process(incoming)
            if incoming.kind != "event" or incoming.sent_ms is None:
                return
            predicted = time.time() * 1000.0
            fetched_ms = fetched.pop((incoming.topic, incoming.partition, incoming.offset))
            steps["sent_to_fetched"].append(fetched_ms - incoming.sent_ms)
            steps["fetched_to_popped"].append(popped - fetched_ms)
            steps["popped_to_predicted"].append(predicted - popped)
            steps["sent_to_predicted"].append(predicted - incoming.sent_ms)

        inputs_module.to_items = stamped  # type: ignore[assignment]
        self.processor.process = process  # type: ignore[method-assign]


def riverline_breakdown(
    bootstrap: str,
    redis_url: str,
    client: str,
    rate: float,
    seconds: float,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    cfg = config(bootstrap, redis_url, client, overrides)
    make_transport(cfg.kafka, bootstrap).ensure_topics(
        [getattr(cfg.kafka.topics, t) for t in TOPICS]
    )
    consumer = StampedConsumer(cfg, bootstrap, connect(redis_url), until_idle=3.0)
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(report=consumer.run()))
    thread.start()
    deadline = time.monotonic() + 30
    while not consumer.lags and time.monotonic() < deadline:  # joined and fetching
        time.sleep(0.1)
    time.sleep(1.0)
    out = tempfile.mktemp(prefix="riverline-acked-", suffix=".json")
    producer = start_publisher(publisher_config(cfg), bootstrap, rate, seconds, out)
    producer.join()
    thread.join()
    inputs_module.to_items = TO_ITEMS
    cleanup(cfg, bootstrap, redis_url)
    steps = {"sent_to_acked": read_acknowledged(out)}
    steps |= {step: quantiles(values) for step, values in consumer.steps.items()}
    steps["reported"] = dict(result["report"]["run"]["latency_ms"]["event_to_prediction"])
    return steps


def median_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for step in runs[0]:
        out[step] = {
            q: statistics.median(r[step][q] for r in runs)
            for q in runs[0][step]
            if q.startswith("p")
        }
    return out


def outside_rounds(
    bootstrap: str,
    redis_url: str,
    servers: list[str],
    rate: float,
    args: argparse.Namespace,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    """``--repeats`` rounds, each running every server once (alternating); medians and ratios
    to the first server's."""
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in servers}
    for round_ in range(args.repeats):
        for server in servers:
            result = outside.one_run(
                server, bootstrap, redis_url, rate, args.seconds, args.warmup, overrides
            )
            runs[server].append(result)
            shown = "  ".join(f"{q} {result[q]:6.1f}" for q in ("p50", "p90", "p99"))
            print(f"  round {round_ + 1} {server:<28} {shown} ms  missing {result['missing']}")
    medians = {
        s: {q: statistics.median(r[q] for r in rs) for q in ("p50", "p90", "p99")}
        for s, rs in runs.items()
    }
    floor = medians[servers[0]]
    ratios = {s: {q: m[q] / floor[q] for q in m} for s, m in medians.items()}
    print(f"outside at {rate:.0f} ev/s, medians of {args.repeats} rounds:")
    for server in servers:
        m, r = medians[server], ratios[server]
        print(
            f"  {server:<28}"
            + "  ".join(f"{q} {m[q]:6.1f} ({r[q]:.2f}x)" for q in m)
            + f"  p50 gap {m['p50'] - floor['p50']:+.1f} ms"
        )
    return {"median": medians, "ratio": ratios, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--clients", default="kafka-python,confluent")
    parser.add_argument("--rates", default="1000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--raw", action="store_true", help="a bare client, no riverline")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--publisher-linger-ms", type=int, default=None)
    parser.add_argument("--publisher-client", default=None, help="default: the consumer's")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--outside", action="store_true", help="probe from outside (issue 22)")
    parser.add_argument("--servers", default="bare,riverline", help="--outside: bare first")
    parser.add_argument("--warmup", type=int, default=500, help="--outside: events left out")
    args = parser.parse_args()
    overrides = nested(args.set)
    if args.publisher_linger_ms is not None:
        PUBLISHER["linger_ms"] = args.publisher_linger_ms
    if args.publisher_client is not None:
        PUBLISHER["client"] = args.publisher_client
    redis_url = resolve_redis_url("redis://127.0.0.1:6379/0")
    # A terminated harness still stops its broker and children (the context managers' exits).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    measure = raw_round_trip if args.raw else riverline_breakdown
    results: dict[str, Any] = {"args": vars(args) | {"json": str(args.json)}}
    with EmbeddedBroker() as broker:
        if args.outside:
            for rate in (float(r) for r in args.rates.split(",")):
                servers = args.servers.split(",")
                results[f"outside@{rate:.0f}"] = outside_rounds(
                    broker.bootstrap, redis_url, servers, rate, args, overrides
                )
        for client in [] if args.outside else args.clients.split(","):
            for rate in (float(r) for r in args.rates.split(",")):
                runs = [
                    measure(
                        broker.bootstrap,
                        redis_url,
                        client,
                        rate,
                        args.seconds,
                        overrides,
                    )
                    for _ in range(args.repeats)
                ]
                row = median_runs(runs)
                results[f"{client}@{rate:.0f}"] = {"median": row, "runs": runs}
                print(f"{client} at {rate:.0f} ev/s ({'raw' if args.raw else 'riverline'}):")
                for step, qs in row.items():
                    print(
                        f"  {step:<22}" + "  ".join(f"{q} {v:8.1f}" for q, v in qs.items()) + " ms",
                        flush=True,
                    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
