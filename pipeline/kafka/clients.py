"""Kafka clients built from the config, whichever library ``kafka.client`` picks.

The functions here are shortcuts over :mod:`pipeline.kafka.transport` for one-off uses;
``make_producer``/``make_consumer`` build kafka-python clients directly, for tools written
against kafka-python's API (``force_close`` drops such a producer with what it holds).
"""

from __future__ import annotations

from pipeline.config import KafkaConfig
from pipeline.kafka.kafka_python import force_close, make_consumer, make_producer
from pipeline.kafka.transport import DELIVERY_TIMEOUT_MS, make_transport

__all__ = [
    "DELIVERY_TIMEOUT_MS",
    "ensure_topics",
    "force_close",
    "make_consumer",
    "make_producer",
    "make_transport",
]


def ensure_topics(
    config: KafkaConfig, bootstrap: str, names: list[str], timeout: float = 30.0
) -> None:
    """Create the topics that do not exist yet, with the configured partitions."""
    make_transport(config, bootstrap).ensure_topics(names, timeout)
