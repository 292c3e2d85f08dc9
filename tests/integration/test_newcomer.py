"""From the demo to one's own data, through the installed ``riverline`` console script."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from river import evaluate

from pipeline.config import load_config
from pipeline.models import make_metric, parse_model_spec
from producers.sources import open_source
from tests.conftest import TEST_SECRET, Backends, delete_pipelines
from tests.integration.helpers import json_values, read_topic

pytestmark = pytest.mark.integration

RIVERLINE = str(Path(sys.executable).with_name("riverline"))
REPO = Path(__file__).resolve().parents[2]
PAYMENTS_CSV = REPO / "configs" / "payments.csv"
PAYMENTS_YAML = REPO / "configs" / "payments.yaml"


def cli_env(backends: Backends) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERLINE_")}
    env["RIVERLINE_KAFKA_BOOTSTRAP"] = backends.kafka
    env["RIVERLINE_REDIS_URL"] = backends.redis
    env["RIVERLINE_CHECKPOINT_SECRET"] = TEST_SECRET
    return env


def riverline(args: list[str], env: dict[str, str], **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [RIVERLINE, *args], env=env, capture_output=True, text=True, timeout=300, cwd=REPO, **kw
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


def test_version() -> None:
    from importlib.metadata import version

    proc = subprocess.run([RIVERLINE, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"riverline {version('riverline')}"


def test_broker_command_serves_until_terminated() -> None:
    proc = subprocess.Popen(
        [RIVERLINE, "broker"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.fullmatch(r"export RIVERLINE_KAFKA_BOOTSTRAP=(127\.0\.0\.1:(\d+))\n", line)
        assert found, line
        bootstrap, port = found.group(1), int(found.group(2))
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        for i in range(3):
            producer.send("broker-test", key=b"k", value=f"hello {i}".encode())
        producer.flush()
        producer.close()
        values = [r.value for r in read_topic(bootstrap, "broker-test")]
        assert values == [b"hello 0", b"hello 1", b"hello 2"]

        # A port in use is refused with a message, not a broker that never answers.
        taken = subprocess.run(
            [RIVERLINE, "broker", "--port", str(port)], capture_output=True, text=True, timeout=60
        )
        assert taken.returncode == 1
        assert f"port {port} is in use" in taken.stderr and "Traceback" not in taken.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "broker stopped (SIGTERM)" in stderr
    with socket.socket() as probe, pytest.raises(OSError):
        probe.connect(("127.0.0.1", port))  # the broker went with it


def test_own_csv_replay_run_status_tail_delete(
    backends: Backends, pipeline_name: str, tmp_path: Path
) -> None:
    """The "Your own data" flow beyond what its tutorial shows: River to the last digit, delete."""
    env = cli_env(backends)
    named = ["--config", str(PAYMENTS_YAML), "--name", pipeline_name]
    try:
        replayed = riverline(
            ["replay", *named, "--source", str(PAYMENTS_CSV), "--label-delay", "20"], env
        )
        assert replayed.returncode == 0, replayed.stderr
        assert "published 801 events and 801 labels" in replayed.stderr
        cfg = load_config(PAYMENTS_YAML, {"name": pipeline_name}, environ={})
        producer = KafkaProducer(bootstrap_servers=backends.kafka)
        producer.send(cfg.kafka.topics.events, key=b"z", value=b"")  # a zero-length value
        producer.flush()
        producer.close()

        report_path = tmp_path / "report.json"
        ran = riverline(["run", *named, "--until-idle", "3", "--report", str(report_path)], env)
        assert ran.returncode == 0, ran.stderr
        report = json.loads(report_path.read_text())
        # The default model took every row (strings one-hot): nothing raised, all learned.
        assert report["model_errors"] == 0
        assert report["labels"] == report["model_version"] == 800
        assert report["dead_letters"] == {"empty": 1, "label_not_allowed": 1}
        rows = [r for r in open_source(str(PAYMENTS_CSV)) if r.label in (True, False)]
        expected = evaluate.progressive_val_score(
            [(r.features, r.label) for r in rows],
            parse_model_spec(cfg.model.spec),
            make_metric("ROCAUC"),
            delay=20,
        )
        assert report["metrics"]["model"]["ROCAUC"] == expected.get()  # River, to the last digit
        assert "ROCAUC (gates promotion)" in ran.stdout
        assert "800 learned" in ran.stdout

        # Topics of its own, and every output says whose it is.
        predictions = json_values(read_topic(backends.kafka, f"{pipeline_name}.predictions"))
        assert len(predictions) == 801
        assert {p["pipeline"] for p in predictions} == {pipeline_name}
        letters = json_values(read_topic(backends.kafka, f"{pipeline_name}.dead-letters"))
        assert {d["pipeline"] for d in letters} == {pipeline_name}

        status = riverline(["status", *named], env)
        assert status.returncode == 0, status.stderr
        assert f"pipeline {pipeline_name}" in status.stdout and "800" in status.stdout

        tail = riverline(["tail", "predictions", *named, "-n", "3"], env)
        assert tail.returncode == 0, tail.stderr
        lines = tail.stdout.splitlines()
        assert len(lines) == 3
        assert [re.search(r"id (\w+)", line).group(1) for line in lines] == [  # type: ignore[union-attr]
            "tx0798",
            "tx0799",
            "tx0800",
        ]
        assert all(" by " in line and "mode " in line for line in lines)

        dead = riverline(["tail", "dead-letters", *named], env)
        assert dead.returncode == 0, dead.stderr
        assert "label_not_allowed: label 'unsure'" in dead.stdout
        assert '"label": "unsure"' in dead.stdout  # the original value, decoded
        assert "empty: the record has no value" in dead.stdout

        nothing = riverline(["tail", "review-requests", *named], env)
        assert nothing.returncode == 0 and nothing.stdout == ""
        assert "is empty" in nothing.stderr

        refused = riverline(["pipeline", "delete", pipeline_name, "--topics"], env, input="n\n")
        assert refused.returncode == 1 and "nothing deleted" in refused.stderr
        assert riverline(["status", *named], env).returncode == 0

        deleted = riverline(["pipeline", "delete", pipeline_name, "--topics", "--yes"], env)
        assert deleted.returncode == 0, deleted.stderr
        assert f"Redis keys of pipeline {pipeline_name}" in deleted.stderr
        gone = riverline(["status", *named], env)
        assert gone.returncode == 1 and "nothing in Redis yet" in gone.stderr
        no_topic = riverline(["tail", "predictions", *named], env)
        assert no_topic.returncode == 1
        assert f"no topic {pipeline_name}.predictions" in no_topic.stderr
    finally:
        delete_pipelines(backends, {pipeline_name})


def test_label_column_missing_is_a_usage_error(
    backends: Backends, pipeline_name: str, tmp_path: Path
) -> None:
    env = cli_env(backends)
    source = tmp_path / "rows.csv"
    source.write_text("id,amount,city,outcome\n1,3.5,Lyon,yes\n2,4.0,Oslo,\n")
    base = ["replay", "--name", pipeline_name, "--source", str(source)]

    default = riverline(base, env)
    assert default.returncode == 2
    message = " ".join(default.stderr.split())
    assert "no label column 'label'; the columns are 'id', 'amount', 'city', 'outcome'" in message

    from kafka import KafkaConsumer

    probe = KafkaConsumer(bootstrap_servers=backends.kafka)
    assert f"{pipeline_name}.events" not in probe.topics()  # refused before touching Kafka
    probe.close()

    given = riverline([*base, "--label-column", "outcomes"], env)
    assert given.returncode == 2 and "no label column 'outcomes'" in given.stderr

    named = riverline([*base, "--label-column", "outcome"], env)
    assert named.returncode == 0, named.stderr
    assert "published 2 events and 1 labels" in named.stderr  # an empty cell: no label

    none = riverline([*base, "--no-labels"], env)
    assert none.returncode == 0, none.stderr
    assert "published 2 events and 0 labels" in none.stderr

    both = riverline([*base, "--no-labels", "--label-column", "outcome"], env)
    assert both.returncode == 2


def test_tail_follow_prints_new_records_until_stopped(
    backends: Backends, pipeline_name: str
) -> None:
    env = cli_env(backends)
    topic = f"{pipeline_name}.predictions"
    producer = KafkaProducer(bootstrap_servers=backends.kafka)

    def prediction(i: int) -> bytes:
        return json.dumps(
            {
                "id": f"p{i}",
                "ts": 0,
                "prediction": i % 2 == 0,
                "source": "default",
                "model_version": 0,
                "confidence": None,
                "mode": "cold",
                "pipeline": pipeline_name,
            }
        ).encode()

    for i in range(2):
        producer.send(topic, key=b"k", value=prediction(i))
    producer.flush()
    proc = subprocess.Popen(
        [RIVERLINE, "tail", "predictions", "--name", pipeline_name, "-n", "1", "--follow"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        assert "id p1 -> False  by default" in proc.stdout.readline()  # the last one only
        producer.send(topic, key=b"k", value=prediction(2))
        producer.flush()
        assert "id p2 -> True  by default" in proc.stdout.readline()  # then what arrives
    finally:
        producer.close()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
