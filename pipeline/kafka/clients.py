"""kafka-python clients built from the config, and the topics they need."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from pipeline.config import KafkaConfig

log = logging.getLogger(__name__)


def _common(config: KafkaConfig, bootstrap: str) -> dict[str, Any]:
    return {"bootstrap_servers": bootstrap.split(","), **config.client_options}


# After this long a send has succeeded or failed; a flush that takes much longer is stuck.
# kafka-python requires it above linger_ms + request_timeout_ms (30 s by default).
DELIVERY_TIMEOUT_MS = 60_000


def make_producer(config: KafkaConfig, bootstrap: str, **overrides: Any) -> KafkaProducer:
    options: dict[str, Any] = {
        "acks": "all",
        "linger_ms": 5,
        "retries": 10,
        "max_in_flight_requests_per_connection": 1,  # keeps per-partition order across retries
        "delivery_timeout_ms": DELIVERY_TIMEOUT_MS,
        **_common(config, bootstrap),
        **overrides,
    }
    return KafkaProducer(**options)


def make_consumer(
    config: KafkaConfig, bootstrap: str, group_id: str | None, **overrides: Any
) -> KafkaConsumer:
    options: dict[str, Any] = {
        "group_id": group_id,
        "enable_auto_commit": False,  # Redis checkpoints are the source of truth, not the group
        "auto_offset_reset": "earliest",
        "session_timeout_ms": config.session_timeout_ms,
        "heartbeat_interval_ms": config.heartbeat_interval_ms,
        "max_poll_interval_ms": config.max_poll_interval_ms,
        "max_poll_records": config.max_poll_records,
        "max_partition_fetch_bytes": config.max_partition_fetch_bytes,
        **_common(config, bootstrap),
        **overrides,
    }
    return KafkaConsumer(**options)


def ensure_topics(
    config: KafkaConfig, bootstrap: str, names: list[str], timeout: float = 30.0
) -> None:
    """Create the topics that do not exist yet, with the configured partitions."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin = KafkaAdminClient(**_common(config, bootstrap))
            break
        except KafkaError as e:
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot reach Kafka at {bootstrap}: {e}") from None
            time.sleep(0.2)
    try:
        existing = set(admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            topics = [NewTopic(n, config.partitions, config.replication_factor) for n in missing]
            # Another process may create them in between: that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(topics)
            log.info("created topics %s with %d partitions", missing, config.partitions)
        _wait_for_metadata(admin, names, deadline)
    finally:
        admin.close()


def _wait_for_metadata(admin: KafkaAdminClient, names: list[str], deadline: float) -> None:
    while True:
        described = admin.describe_topics(names)
        if all(t.get("error_code", 0) == 0 and t.get("partitions") for t in described):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"topics {names} did not appear in the broker's metadata")
        time.sleep(0.1)
