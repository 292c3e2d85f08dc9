"""Shared fixtures: the real broker and real Redis the integration tests run against.

Backends, first that applies: ``RIVERLINE_TEST_KAFKA_BOOTSTRAP`` / ``RIVERLINE_TEST_REDIS_URL``;
else testcontainers' Kafka and Redis when a Docker daemon answers; else the embedded broker
(Tansu) and the local Redis (or a private redis-server). Every test gets its own pipeline name,
which prefixes its Redis keys and its topics, and only those keys are deleted afterwards.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from pipeline.config import RiverlineConfig, load_config
from pipeline.kafka.embedded import BrokerUnavailable, EmbeddedBroker, broker_binary

TEST_SECRET = "riverline-test-secret"

# pytest-xdist workers inherit COLUMNS=80, and a set COLUMNS sets the width of riverline's tables
# even in a pipe (pipeline.cli.common.stdout_console): every command a test starts would wrap at
# 80 under -n but not under -n 0. Tests that want a width (the docs' pages) set it themselves.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)


@dataclass(frozen=True)
class Backends:
    kafka: str
    redis: str
    description: str


def docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


def _start_backends(stack: ExitStack) -> Backends:
    kafka = os.environ.get("RIVERLINE_TEST_KAFKA_BOOTSTRAP")
    redis_url = os.environ.get("RIVERLINE_TEST_REDIS_URL")
    if kafka and redis_url:
        return Backends(kafka, redis_url, "from RIVERLINE_TEST_* environment variables")
    if not (kafka or redis_url) and docker_answers():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.redis import RedisContainer

        kafka_c = stack.enter_context(KafkaContainer().with_kraft())
        redis_c = stack.enter_context(RedisContainer())
        host, port = redis_c.get_container_host_ip(), redis_c.get_exposed_port(6379)
        return Backends(
            kafka_c.get_bootstrap_server(), f"redis://{host}:{port}/0", "testcontainers"
        )
    from pipeline.state.redis_client import resolve_redis_url

    if not kafka:
        kafka = stack.enter_context(EmbeddedBroker()).bootstrap
        kafka_desc = "embedded Tansu broker"
    else:
        kafka_desc = "Kafka from RIVERLINE_TEST_KAFKA_BOOTSTRAP"
    redis_url = redis_url or resolve_redis_url("redis://127.0.0.1:6379/0")
    return Backends(kafka, redis_url, f"{kafka_desc} at {kafka}, Redis at {redis_url}")


@pytest.fixture(scope="session")
def backends() -> Iterator[Backends]:
    with ExitStack() as stack:
        found = _start_backends(stack)
        print(f"\n[riverline tests] backends: {found.description}")
        yield found


@pytest.fixture
def pipeline_name() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


def build_test_config(
    backends: Backends, name: str, overrides: dict[str, Any] | None = None
) -> RiverlineConfig:
    """A config of its own for one test pipeline: its name prefixes its topics and Redis keys."""
    from pipeline.config import _deep_merge

    base: dict[str, Any] = {
        "name": name,
        "kafka": {"bootstrap": backends.kafka},  # topics default to {name}.events, ...
        "redis": {"url": backends.redis},
        "checkpoint": {"secret": TEST_SECRET},
    }
    return load_config(None, _deep_merge(base, overrides or {}), environ={})


def delete_pipelines(backends: Backends, names: set[str]) -> None:
    """Remove the Redis keys of these test pipelines (never anything else)."""
    from pipeline.checkpointing.store import CheckpointStore
    from pipeline.state.redis_client import connect

    client = connect(backends.redis)
    for name in names:
        CheckpointStore(client, name, None).delete_all()
    client.close()


def _confluent_installed() -> bool:
    from pipeline.kafka.transport import confluent_installed

    return confluent_installed()


# The core cases run on both Kafka clients; the others on RIVERLINE_TEST_KAFKA_CLIENT
# (kafka-python, the default dependency, unless told otherwise).
TRANSPORTS = [
    "kafka-python",
    pytest.param(
        "confluent",
        marks=pytest.mark.skipif(
            not _confluent_installed(), reason="confluent-kafka not installed (riverline[fast])"
        ),
    ),
]


@pytest.fixture(scope="module", params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """The Kafka client a core test runs on: requesting it runs the test once per client.

    Module-scoped, so a module's expensive shared fixtures (a reference run) are built once per
    client, and the tests are grouped by client.
    """
    return str(request.param)


@pytest.fixture
def make_config(
    backends: Backends, pipeline_name: str, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """Build a config for this test's pipeline: unique name, topics and Redis prefix."""
    names: list[str] = []
    if "transport" in request.fixturenames:
        client = str(request.getfixturevalue("transport"))
    else:
        client = os.environ.get("RIVERLINE_TEST_KAFKA_CLIENT", "kafka-python")

    def build(overrides: dict[str, Any] | None = None, name: str | None = None) -> RiverlineConfig:
        run_name = name or pipeline_name
        names.append(run_name)
        from pipeline.config import _deep_merge

        chosen = _deep_merge({"kafka": {"client": client}}, overrides or {})
        return build_test_config(backends, run_name, chosen)

    yield build
    delete_pipelines(backends, set(names))


@pytest.fixture
def stoppable_broker() -> Iterator[EmbeddedBroker]:
    """An embedded broker of the test's own, to stop (SIGSTOP) and resume; resumed at the end
    whatever the test did. Skips where the broker binary is not available."""
    try:
        broker_binary()
    except BrokerUnavailable as e:
        pytest.skip(f"needs the embedded broker to stop it: {e}")
    with EmbeddedBroker() as running:
        assert running.process is not None
        yield running
        os.kill(running.process.pid, signal.SIGCONT)
