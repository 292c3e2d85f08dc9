"""`riverline topics create` through the console script, against the real broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.config import RiverlineConfig
from pipeline.kafka.transport import make_transport
from tests.integration.cli import assert_one_error, cli_env, riverline
from tests.integration.helpers import write_config

pytestmark = pytest.mark.integration

DEAD_KAFKA = "127.0.0.1:1"


def partitions(cfg: RiverlineConfig) -> dict[str, int | None]:
    assert cfg.kafka.bootstrap is not None
    transport = make_transport(cfg.kafka, cfg.kafka.bootstrap)
    return {
        name: transport.partition_count(name) for name in cfg.kafka.topics.model_dump().values()
    }


def test_creates_every_topic_with_the_configured_partitions_then_reports_them(
    make_config: Any, transport: str, tmp_path: Path
) -> None:
    cfg = make_config({"kafka": {"partitions": 3}})
    names = list(cfg.kafka.topics.model_dump().values())
    assert partitions(cfg) == dict.fromkeys(names)  # none exists yet
    config = write_config(cfg, tmp_path / "c.yaml")
    # The client comes from the environment, as in a container.
    env = cli_env(RIVERLINE_KAFKA__CLIENT=transport)

    first = riverline(["topics", "create", "--config", str(config)], env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [f"{name}: created (3 partitions)" for name in names]
    assert partitions(cfg) == dict.fromkeys(names, 3)

    again = riverline(["topics", "create", "--config", str(config)], env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [f"{name}: exists (3 partitions)" for name in names]
    assert "warning" not in again.stderr


def test_a_topic_with_other_partitions_is_a_warning_naming_it(
    make_config: Any, tmp_path: Path
) -> None:
    cfg = make_config({"kafka": {"partitions": 2}})
    assert cfg.kafka.bootstrap is not None
    labels = cfg.kafka.topics.labels
    # Someone created the labels topic by hand, with one partition.
    one = cfg.kafka.model_copy(update={"partitions": 1})
    make_transport(one, cfg.kafka.bootstrap).ensure_topics([labels])
    config = write_config(cfg, tmp_path / "c.yaml")

    result = riverline(["topics", "create", "--config", str(config)], cli_env())
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {labels} exists with 1 partition; the config says 2 (kafka.partitions)"
    ]
    assert labels not in result.stdout
    assert len(result.stdout.splitlines()) == 4
    found = partitions(cfg)
    assert found.pop(labels) == 1  # left as it was: only Kafka's own tools change partitions
    assert set(found.values()) == {2}


def test_name_and_bootstrap_flags_override_the_file(backends: Any, pipeline_name: str) -> None:
    # The compose job's form: a file, the broker from the environment, a name from a flag.
    env = cli_env(RIVERLINE_KAFKA_BOOTSTRAP=backends.kafka)
    result = riverline(["topics", "create", "--name", pipeline_name], env)
    assert result.returncode == 0, result.stderr
    assert f"{pipeline_name}.events: created (1 partition)" in result.stdout.splitlines()


def test_kafka_down_is_one_error_line() -> None:
    result = riverline(["topics", "create", "--bootstrap", DEAD_KAFKA], cli_env())
    message = assert_one_error(result, 1, "Kafka", DEAD_KAFKA)
    assert "did not answer" in message


def test_no_bootstrap_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("name: nowhere\n")
    result = riverline(["topics", "create", "--config", str(config)], cli_env())
    assert_one_error(result, 2, "kafka.bootstrap")
