"""The compose deployment's riverline commands against Kafka and Redis in containers.

The learner, the standby learner and two predictors run exactly the commands of
docker-compose.yml (read from it), as processes on this machine, against a Kafka container with
auto-create off (so `riverline topics create` must have made the topics) and a Redis container
with a password. Needs a Docker daemon; skipped, saying so, where none answers.
"""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from pipeline.health import http_get
from tests.conftest import docker_answers
from tests.integration.cli import cli_env, finish, riverline, start
from tests.integration.helpers import read_topic, wait_for
from tests.unit.test_compose import (
    COMPOSE_CONFIG,
    argv,
    container_path_on_host,
    environment,
    services,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not docker_answers(),
        reason="no Docker daemon answers (docker.from_env().ping() failed): the deployment "
        "test needs Kafka and Redis containers",
    ),
]

REDIS_PASSWORD = f"pw-{uuid.uuid4().hex[:8]}"
EVENTS = 2000
# Its own pipeline name (topics, Redis keys), also where the containers are shared.
NAME = f"deploy-{uuid.uuid4().hex[:8]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def containers() -> Iterator[tuple[str, str]]:
    """(Kafka bootstrap, Redis URL with the password) of fresh containers."""
    from testcontainers.kafka import KafkaContainer
    from testcontainers.redis import RedisContainer

    with ExitStack() as stack:
        kafka = KafkaContainer().with_kraft().with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        kafka = stack.enter_context(kafka)
        redis = stack.enter_context(RedisContainer(password=REDIS_PASSWORD))
        host, port = redis.get_container_host_ip(), redis.get_exposed_port(6379)
        yield kafka.get_bootstrap_server(), f"redis://:{REDIS_PASSWORD}@{host}:{port}/0"


def compose_command(service: str, metrics_port: int) -> list[str]:
    """The service's riverline arguments, its config from the repository, its own port."""
    args = argv(services()[service])[1:]
    config = args.index("--config") + 1
    args[config] = str(container_path_on_host(services()[service], args[config]))
    if "--metrics-port" in args:
        args[args.index("--metrics-port") + 1] = str(metrics_port)
    return args


def compose_env(service: str, bootstrap: str, redis_url: str) -> dict[str, str]:
    """The service's environment, pointed at the containers instead of compose's hosts."""
    env = environment(services()[service])
    env["RIVERLINE_KAFKA_BOOTSTRAP"] = bootstrap
    env["RIVERLINE_REDIS_URL"] = redis_url
    env["RIVERLINE_NAME"] = NAME
    return cli_env(**env)


def ready(port: int) -> bool:
    try:
        return http_get(port, "/readyz", timeout=2)[0] == 200
    except OSError:
        return False


def test_learner_standby_and_two_predictors_serve_every_event(
    containers: tuple[str, str],
) -> None:
    bootstrap, redis_url = containers
    topics = riverline(
        compose_command("topics", 0), compose_env("topics", bootstrap, redis_url), timeout=120
    )
    assert topics.returncode == 0, topics.stderr
    assert topics.stdout.count(": created (4 partitions)") == 5, topics.stdout

    roles = ["learner", "learner-standby", "predictor", "predictor"]
    ports = [free_port() for _ in roles]
    procs: list[subprocess.Popen[str]] = []
    try:
        for role, port in zip(roles, ports, strict=True):
            procs.append(
                start(compose_command(role, port), compose_env(role, bootstrap, redis_url))
            )
        # Alive at once; ready once the lease is settled (learner, standby).
        for port in ports:
            wait_for(lambda p=port: _answers(p, "/healthz"), 60, f"/healthz on {port}")
        wait_for(lambda: ready(ports[0]) and ready(ports[1]), 90, "both learners ready")

        replay_args = compose_command("replay", 0)
        replay_args[replay_args.index("--source") + 1] = (
            f"synth:SEA:seed=7,n={EVENTS},drift_at={EVENTS // 2}"
        )
        speed = replay_args.index("--speed") + 1
        replay_args[speed] = "max"
        replay_args[
            replay_args.index("--metrics-port") : replay_args.index("--metrics-port") + 2
        ] = []
        replayed = riverline(replay_args, compose_env("replay", bootstrap, redis_url), timeout=180)
        assert replayed.returncode == 0, replayed.stderr

        wait_for(lambda: ready(ports[2]) and ready(ports[3]), 120, "both predictors ready")
        predictions_topic = f"{NAME}.predictions"
        seen: dict[str, list[dict[str, Any]]] = {}

        def every_event_predicted() -> bool:
            seen.clear()
            for record in read_topic(bootstrap, predictions_topic, timeout_s=2):
                value = json.loads(record.value)
                seen.setdefault(value["id"], []).append(value)
            return len(seen) >= EVENTS

        wait_for(every_event_predicted, 180, f"predictions for all {EVENTS} events")
        assert len(seen) == EVENTS
        assert all("model_version" in p for ps in seen.values() for p in ps)
        # Both predictors served some of the four partitions.
        served = [_scrape_total(port, "riverline_events_total") for port in ports[2:]]
        assert all(n > 0 for n in served), served
        assert sum(served) >= EVENTS
    finally:
        for proc in procs:
            proc.terminate()
        results = [finish(proc, timeout=60) for proc in procs]
    for role, result in zip(roles, results, strict=True):
        assert "Traceback" not in result.stderr, (role, result.stderr)
        assert result.returncode == 0, (role, result.returncode, result.stderr[-2000:])
    assert COMPOSE_CONFIG.exists()


def _answers(port: int, path: str) -> bool:
    try:
        return http_get(port, path, timeout=2)[0] == 200
    except OSError:
        return False


def _scrape_total(port: int, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    body = http_get(port, "/metrics")[1]
    return sum(
        sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == name
    )
