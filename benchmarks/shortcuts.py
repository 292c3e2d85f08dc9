"""Each private-API shortcut against its public path, end to end (not a test).

    python benchmarks/shortcuts.py [--repeats 3] [--events 20000] [--dataset Shuttle]
        [--json out.json]

Runs ``benchmarks/transport.py``'s end to end (the replay published first, then ``Consumer``
reads events and labels, learns, publishes every prediction and checkpoints; events/s over its
active time) once per variant in each repeat, the variants alternating: every shortcut on, then
each shortcut forced onto its public path alone (``pipeline.shortcuts.public_only``), then all
of them public; each repeat starts one variant further on. Prints per variant the median
events/s and its ratio to "all on" (median of the per-repeat ratios: a shortcut pays
1 / ratio - 1), the consumer process's CPU time per event and its ratio (on a shared machine
CPU time moves less with the neighbours than the rate does), and the replay's publish rate in
the same run (the kafka-python shortcuts on the produce side are also the replay's).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from transport import end_to_end, records

from pipeline import shortcuts
from pipeline.kafka.embedded import EmbeddedBroker
from pipeline.kafka.transport import confluent_installed
from pipeline.state.redis_client import resolve_redis_url

# The kafka-python shortcuts matter only on that client; any others run on either, so they are
# measured on the faster one (confluent) when it is installed, where their share is larger.
KAFKA_PYTHON = sorted(n for n in shortcuts.CHECKED if n.startswith("kafka-python."))
OTHERS = sorted(n for n in shortcuts.CHECKED if not n.startswith("kafka-python."))


def variants(clients: list[str]) -> list[tuple[str, str, frozenset[str]]]:
    out: list[tuple[str, str, frozenset[str]]] = []
    for client in clients:
        if client == "kafka-python":
            mine = KAFKA_PYTHON if "confluent" in clients else KAFKA_PYTHON + OTHERS
        else:
            mine = OTHERS
        if not mine:
            continue
        out.append((f"{client}: all on", client, frozenset()))
        out += [(f"{client}: {n} public", client, frozenset({n})) for n in mine]
        out.append((f"{client}: all public", client, frozenset(mine)))
    return out


def parts(bootstrap: str, redis_url: str, n: int, repeats: int) -> dict[str, Any]:
    """Each shortcut's own work, on and forced public, alternating: CPU microseconds per record
    of the process (the client's IO thread included), medians of ``repeats``.

    kafka-python.fetch: ``poll`` until ``n`` records of a topic are read; the produce ones: the
    tracked sender (the consumer's outputs) sending ``n`` prediction-sized records, then flush.
    """
    import uuid

    from kafka import TopicPartition

    from pipeline.config import KafkaConfig
    from pipeline.kafka.kafka_python import KafkaPythonTransport

    transport = KafkaPythonTransport(KafkaConfig(), bootstrap)
    topic = f"shortcuts-{uuid.uuid4().hex[:8]}"
    transport.ensure_topics([topic])
    value = b'{"id": "12345", "prediction": true, "confidence": 0.93, "source": "model"}'
    producer = transport.producer()
    send = producer.tracked_sender().send
    for i in range(n):
        send(topic, str(i).encode(), value, 0)
    producer.flush(30)
    producer.close()

    def fetch() -> None:
        consumer = transport.consumer(None)
        consumer.client.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning((topic, 0))
        got = 0
        while got < n:
            got += sum(len(r) for r in consumer.poll(200).values())
        consumer.close()

    def produce() -> None:
        producer = transport.producer()
        send = producer.tracked_sender().send
        send(topic, b"0", value, 0)  # the topic's metadata, not measured work
        producer.flush(30)
        for i in range(n):
            send(topic, str(i).encode(), value, 0)
        producer.flush(30)
        producer.close()

    cases = [
        ("kafka-python.fetch", fetch, frozenset({"kafka-python.fetch"})),
        ("kafka-python.append", produce, frozenset({"kafka-python.append"})),
        ("kafka-python.open-batch", produce, frozenset({"kafka-python.open-batch"})),
    ]
    out: dict[str, Any] = {}
    for name, work, public in cases:
        if name not in shortcuts.CHECKED:
            continue
        times: dict[str, list[float]] = {"on": [], "public": []}
        for _ in range(repeats):
            for side in ("on", "public"):
                shortcuts.public_only.clear()
                if side == "public":
                    shortcuts.public_only.update(public)
                started = time.process_time()
                work()
                times[side].append((time.process_time() - started) / n * 1e6)
                shortcuts.public_only.clear()
        on, off = statistics.median(times["on"]), statistics.median(times["public"])
        out[name] = {"on_us": on, "public_us": off, "saved_us": off - on}
        print(f"{name:<26} on {on:6.2f} us/rec  public {off:6.2f}  saves {off - on:6.2f}")
    transport.delete_topics([topic])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--dataset", default="Shuttle")
    parser.add_argument("--clients", default="kafka-python,confluent")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--parts", action="store_true", help="each shortcut's own work only")
    parser.add_argument(
        "--only", default="", help="comma-separated shortcuts: the A/B of these alone"
    )
    args = parser.parse_args()
    if args.parts:
        with EmbeddedBroker() as broker:
            found = parts(
                broker.bootstrap,
                resolve_redis_url("redis://127.0.0.1:6379/0"),
                args.events,
                args.repeats,
            )
        if args.json:
            args.json.write_text(json.dumps(found, indent=2))
        return
    clients = [c for c in args.clients.split(",") if c != "confluent" or confluent_installed()]
    redis_url = resolve_redis_url("redis://127.0.0.1:6379/0")
    chosen = variants(clients)
    if args.only:
        only = set(args.only.split(","))
        chosen = [v for v in chosen if v[0].endswith("all on") or (v[2] <= only and v[2])]
        chosen = [v for v in chosen if v[2] or any(c == v[1] for _, c, p in chosen if p)]
    runs: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in chosen}
    load = os.getloadavg()
    with EmbeddedBroker() as broker:
        for client in clients:  # warm-up: a fresh broker's first topics are slower
            end_to_end(records("Bananas", 2000), broker.bootstrap, redis_url, client)
        data = records(args.dataset, args.events)
        for repeat in range(args.repeats):
            # Each repeat starts one variant further on: none always runs first (or after the
            # same neighbour).
            turn = repeat % len(chosen)
            for label, client, public in chosen[turn:] + chosen[:turn]:
                shortcuts.public_only.clear()
                shortcuts.public_only.update(public)
                try:
                    run = end_to_end(data, broker.bootstrap, redis_url, client)
                finally:
                    shortcuts.public_only.clear()
                runs[label].append(run)
                print(
                    f"  repeat {repeat + 1} {label}: {run['events_per_s']:.0f} ev/s, "
                    f"cpu {run['consumer_cpu_us_per_event']:.0f} us/ev",
                    flush=True,
                )
    results: dict[str, Any] = {"events": args.events, "dataset": args.dataset, "load": load}
    for label, client, _ in chosen:
        base = runs[f"{client}: all on"]
        mine = runs[label]
        pairs = list(zip(mine, base, strict=True))
        row = {
            "events_per_s": statistics.median(r["events_per_s"] for r in mine),
            "ratio_to_all_on": statistics.median(
                m["events_per_s"] / b["events_per_s"] for m, b in pairs
            ),
            "cpu_us_per_event": statistics.median(r["consumer_cpu_us_per_event"] for r in mine),
            "cpu_ratio_to_all_on": statistics.median(
                m["consumer_cpu_us_per_event"] / b["consumer_cpu_us_per_event"] for m, b in pairs
            ),
            "runs": [round(r["events_per_s"]) for r in mine],
            "replay_records_per_s": statistics.median(r["replay_records_per_s"] for r in mine),
        }
        results[label] = row
        print(
            f"{label:<45} {row['events_per_s']:>7.0f} ev/s  x{row['ratio_to_all_on']:.3f} "
            f"({', '.join(str(r) for r in row['runs'])})  cpu {row['cpu_us_per_event']:.0f} "
            f"us/ev x{row['cpu_ratio_to_all_on']:.3f}  replay "
            f"{row['replay_records_per_s']:.0f} rec/s"
        )
    print(f"load average before {load}, after {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
