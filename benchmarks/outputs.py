"""The durable outputs' cost per record, per Kafka client (not a test).

    python benchmarks/outputs.py [--records 50000] [--repeats 5] [--against main]
        [--clients kafka-python,confluent]

On the embedded broker, ``DurableOutputs.send`` of ``--records`` predictions-like records over
three partitions, then ``flush``: CPU microseconds per record of the process (the clients' IO
threads included) and of the calling thread. With ``--against REF`` the ``DurableOutputs`` of
that git ref (``pipeline/kafka/outputs.py``, over today's transports) is measured too, the two
interleaved (A, B, A, B, ...). Medians of ``--repeats``; note the load with the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import KafkaConfig
from pipeline.kafka.embedded import EmbeddedBroker
from pipeline.kafka.outputs import DurableOutputs
from pipeline.kafka.transport import confluent_installed, make_transport

ROOT = Path(__file__).resolve().parents[1]
VALUE = (
    b'{"event_id":"123456","prediction":true,"proba":{"true":0.73,"false":0.27},'
    b'"model_version":3,"served_by":"model","ts":1700000123.0}'
)


def durable_of(ref: str) -> Any:
    """``DurableOutputs`` as the git ref ``ref`` has it."""
    source = subprocess.run(
        ["git", "show", f"{ref}:pipeline/kafka/outputs.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    module = types.ModuleType(f"outputs_at_{ref}")
    exec(compile(source, f"{ref}:pipeline/kafka/outputs.py", "exec"), module.__dict__)
    return module.DurableOutputs


def measure(durable_class: Any, transport: Any, topic: str, records: int) -> tuple[float, float]:
    outputs = durable_class(transport.producer, flush_timeout_s=60.0)
    outputs.send(topic, b"warm", b"up", 0)  # the topic's metadata and the connection
    outputs.flush()
    keys = [b"user-%d" % i for i in range(1000)]
    cpu, thread = time.process_time(), time.thread_time()
    for i in range(records):
        outputs.send(topic, keys[i % 1000], VALUE, i % 3)
    assert outputs.flush()
    cpu, thread = time.process_time() - cpu, time.thread_time() - thread
    outputs.close()
    return cpu / records * 1e6, thread / records * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--against", default=None, help="a git ref to compare with")
    parser.add_argument("--clients", default="kafka-python,confluent")
    args = parser.parse_args()
    clients = [c for c in args.clients.split(",") if c != "confluent" or confluent_installed()]
    variants: dict[str, Any] = {"this": DurableOutputs}
    if args.against:
        variants = {args.against: durable_of(args.against), **variants}
    print(f"load average before {os.getloadavg()}")
    with EmbeddedBroker() as broker:
        for client in clients:
            config = KafkaConfig(bootstrap=broker.bootstrap, client=client, partitions=3)
            transport = make_transport(config, broker.bootstrap)
            topic = f"bench-outputs-{client}-{os.getpid()}"
            transport.ensure_topics([topic])
            for durable_class in variants.values():  # unmeasured warm-up
                measure(durable_class, transport, topic, args.records // 10)
            runs: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
            for _ in range(args.repeats):
                for name, durable_class in variants.items():
                    runs[name].append(measure(durable_class, transport, topic, args.records))
            for name, results in runs.items():
                process = statistics.median(r[0] for r in results)
                thread = statistics.median(r[1] for r in results)
                print(
                    f"{client:<13} {name:<10} cpu {process:6.2f} us/rec (process), "
                    f"{thread:6.2f} us/rec (calling thread)  "
                    f"runs {', '.join(f'{r[0]:.2f}' for r in results)}",
                    flush=True,
                )
            transport.delete_topics([topic])
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
