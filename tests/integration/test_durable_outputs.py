"""Durable outputs through a broker that stops answering: nothing lost, on both clients.

The broker process is stopped (SIGSTOP), not killed: requests already sent stay unanswered, the
case where a producer holds records in flight that it can never complete.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest

from pipeline.config import KafkaConfig
from pipeline.kafka.embedded import EmbeddedBroker
from pipeline.kafka.outputs import DurableOutputs
from pipeline.kafka.transport import confluent_installed, make_transport
from tests.integration.helpers import read_topic

CLIENTS = ["kafka-python"] + (["confluent"] if confluent_installed() else [])
# stuck: the flush times out and the producer is replaced (its records aborted, sent again);
# timed_out: each record fails on its own delivery timeout and is sent again at the flush.
MODES: dict[str, dict[str, Any]] = {
    "stuck": {"flush_timeout_s": 2.0, "producer": {}},
    "timed_out": {
        "flush_timeout_s": 20.0,
        "producer": {"delivery_timeout_ms": 1500, "request_timeout_ms": 1000},
    },
}


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("client", CLIENTS)
def test_outputs_sent_while_the_broker_stops_answering_all_arrive(
    client: str, mode: str, stoppable_broker: EmbeddedBroker
) -> None:
    broker = stoppable_broker
    assert broker.process is not None
    config = KafkaConfig(bootstrap=broker.bootstrap, client=client, partitions=3)
    transport = make_transport(config, broker.bootstrap)
    topic = f"durable-{client}-{mode}"
    transport.ensure_topics([topic])
    settings = MODES[mode]
    outputs = DurableOutputs(
        lambda: transport.producer(**settings["producer"]),
        backoff_s=0.1,
        flush_timeout_s=settings["flush_timeout_s"],
    )
    sent: set[bytes] = set()

    def send(count: int) -> None:
        for _ in range(count):
            n = len(sent)
            value = b"%d" % n
            # Explicit partitions, the key's partition and (dead letters) no key at all.
            key = None if n % 5 == 0 else b"key-%d" % n
            outputs.send(topic, key, value, n % 3 if n % 2 else None)
            sent.add(value)

    send(2000)
    assert outputs.flush()
    first = outputs.producer
    os.kill(broker.process.pid, signal.SIGSTOP)
    try:
        send(12_000)  # past the tracked sender's trimming (kafka-python)
        resume = threading.Timer(5.0, os.kill, (broker.process.pid, signal.SIGCONT))
        resume.start()
        assert outputs.flush()
        resume.join()
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)
    assert outputs.resent >= 1
    if mode == "stuck":
        assert outputs.producer is not first
    send(500)
    assert outputs.flush()
    outputs.close()
    delivered = {r.value for r in read_topic(broker.bootstrap, topic)}
    # A duplicate is allowed, a loss never.
    assert sent <= delivered
