"""Never a traceback: each command against each failure a user can cause, via the console script.

Each asserts the documented exit status, no ``Traceback`` in the output, and one ``error:``
message naming what failed (the URL, the host, the file, the config field).
"""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cli import assert_one_error, cli_env, riverline, riverline_all, start
from tests.integration.helpers import publish, write_config

pytestmark = pytest.mark.integration

DEAD_REDIS = "redis://127.0.0.1:1/0"
DEAD_KAFKA = "127.0.0.1:1"


def fake_redis_server(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A PATH whose ``redis-server`` only leaves a mark: proof that none was started."""
    bin_dir, mark = tmp_path / "bin", tmp_path / "redis-server-started"
    bin_dir.mkdir()
    script = bin_dir / "redis-server"
    script.write_text(f"#!/bin/sh\ntouch {mark}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, mark


def test_redis_unreachable(tmp_path: Path) -> None:
    path, mark = fake_redis_server(tmp_path)
    env = cli_env(**path)
    redis = ["--redis-url", DEAD_REDIS]
    commands = [
        ["status", *redis],
        ["status", "--explain", *redis],
        ["checkpoint", "list", *redis],
        ["checkpoint", "show", "1", *redis],
        ["checkpoint", "rollback", "1", *redis],
        ["report", "--out", str(tmp_path / "out"), *redis],
        ["run", *redis, "--bootstrap", DEAD_KAFKA, "--wait-redis", "1"],
    ]
    for result in riverline_all(commands, env):
        assert_one_error(result, 1, "Redis", DEAD_REDIS)
    run = result
    assert "within 1s" in run.stderr
    assert run.stderr.count("does not answer; retrying") == 1  # logged once, not per attempt
    assert not mark.exists()  # no throwaway Redis in place of the configured one


def test_redis_wait_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"redis: {{url: '{DEAD_REDIS}', wait_seconds: 0.5}}\n")
    result = riverline(["run", "--config", str(config), "--bootstrap", DEAD_KAFKA], cli_env())
    assert_one_error(result, 1, DEAD_REDIS, "within 0.5s")


def test_kafka_unreachable(backends: Any, tmp_path: Path) -> None:
    env = cli_env()
    kafka = ["--bootstrap", DEAD_KAFKA, "--redis-url", backends.redis]
    commands = [
        ["run", *kafka, "--name", f"cli-errors-{os.getpid()}"],
        ["replay", "--source", "river:Phishing", *kafka],
        ["demo", *kafka, "--out", str(tmp_path / "out")],
    ]
    for result in riverline_all(commands, env):
        message = assert_one_error(result, 1, "Kafka", DEAD_KAFKA)
        assert "did not answer" in message
        assert "kafka.conn" not in result.stderr  # no client warnings: nothing was built


def test_ctrl_c_interrupts_the_wait_for_kafka(backends: Any) -> None:
    proc = start(["run", "--bootstrap", DEAD_KAFKA, "--redis-url", backends.redis], cli_env())
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:  # the first failed attempt is logged once
        lines.append(line)
        if "does not answer" in line:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    output = out + "".join(lines) + err
    assert proc.returncode == 130, output
    assert "interrupted" in err and "Traceback" not in output


def test_bootstrap_that_is_not_host_port(backends: Any) -> None:
    result = riverline(["replay", "--source", "river:Phishing", "--bootstrap", "nohost"], cli_env())
    assert_one_error(result, 2, "kafka.bootstrap", "nohost")


REPORTS: dict[str, tuple[str, str]] = {
    "not-json": ("{", "not JSON"),
    "a-list": ("[1, 2]", "not a riverline report"),
    "missing-fields": ('{"events": 1}', "no 'labels' field"),
    "wrong-types": (
        json.dumps(
            {"events": "x", "labels": 1, "metrics": {}, "history": [], "promotions": []}
            | {"demotions": []}
        ),
        "'events' is a str",
    ),
    "history-of-numbers": (
        json.dumps(
            {"events": 1, "labels": 1, "metrics": {}, "history": [1], "promotions": []}
            | {"demotions": []}
        ),
        "'history' holds a non-object",
    ),
}


def test_report_from_bad_json(tmp_path: Path) -> None:
    commands, expected = [], []
    missing = tmp_path / "missing.json"
    commands.append(["report", "--from-json", str(missing), "--out", str(tmp_path / "out")])
    expected.append((str(missing), "cannot read it"))
    for case, (text, why) in REPORTS.items():
        path = tmp_path / f"{case}.json"
        path.write_text(text)
        commands.append(["report", "--from-json", str(path), "--out", str(tmp_path / "out")])
        expected.append((str(path), why))
    for result, (path, why) in zip(riverline_all(commands, cli_env()), expected, strict=True):
        assert_one_error(result, 2, path, why)
    assert not (tmp_path / "out").exists()


def test_model_and_metric_that_do_not_fit() -> None:
    regressor = "linear_model.LinearRegression"
    classes = cli_env(RIVERLINE_VALIDATION__LABELS="[true, false]")
    results = [
        *riverline_all(
            [
                ["run", "--metric", "MAE", "--bootstrap", DEAD_KAFKA],
                ["run", "--model", regressor, "--bootstrap", DEAD_KAFKA],
                ["demo", "--model", regressor, "--metric", "Accuracy"],
            ],
            cli_env(),
        ),
        riverline(["run", "--model", regressor, "--metric", "MAE"], classes),
    ]
    assert_one_error(results[0], 2, "evaluation.metric", "'MAE'", "model.spec", "classifier")
    assert_one_error(results[1], 2, "evaluation.metric", "model.spec", regressor, "regressor")
    assert_one_error(results[2], 2, "evaluation.metric", "'Accuracy'", regressor)
    assert_one_error(results[3], 2, "validation.labels", "True", regressor)


def test_regressor_on_boolean_labels(make_config: Any, tmp_path: Path) -> None:
    """Labels of the wrong kind are dead-lettered (label_wrong_type), with one clear error."""
    cfg = make_config(
        {"model": {"spec": "linear_model.LinearRegression"}, "evaluation": {"metric": "MAE"}}
    )
    publish(cfg, "river:Phishing", "0", limit=30)
    config = write_config(cfg, tmp_path / "c.yaml")
    report = tmp_path / "report.json"
    args = ["run", "--config", str(config), "--until-idle", "1", "--report", str(report)]
    result = riverline(args, cli_env())
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "does not fit these labels" in line]
    assert len(errors) == 1 and "is not a number, and the model is a regressor" in errors[0]
    assert json.loads(report.read_text())["dead_letters"] == {"label_wrong_type": 30}


def test_commands_on_a_pipeline_that_does_not_exist(make_config: Any, tmp_path: Path) -> None:
    """Issue 19: status and report printed without the ``error:`` prefix, and checkpoint list
    and model list printed an empty table with exit status 0."""
    config = str(write_config(make_config(), tmp_path / "c.yaml"))
    name = f"nobody-{os.urandom(4).hex()}"
    results = riverline_all(
        [
            ["status", "--config", config, "--name", name],
            ["report", "--config", config, "--name", name, "--out", str(tmp_path)],
            ["checkpoint", "list", "--config", config, "--name", name],
            ["model", "list", "--config", config, "--name", name],
        ],
        cli_env(),
    )
    status, report, checkpoints, models = results
    assert_one_error(status, 1, name, "nothing in Redis")
    assert_one_error(report, 1, name, "no checkpoint")
    assert_one_error(checkpoints, 1, name, "no checkpoint exists")
    assert_one_error(models, 1, name, "no model version exists")
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize("background", [True, False])
def test_a_checkpoint_too_large_for_redis_is_refused_saying_which_setting(
    make_config: Any, tmp_path: Path, background: bool
) -> None:
    """Not retried as "Redis unreachable" (Redis closes the connection on a value over its
    proto-max-bulk-len): one error naming the size, the limit and the settings to change."""
    checkpoint = {"max_bytes": 2000, "background": background, "every_labels": 10}
    cfg = make_config({"checkpoint": checkpoint})
    publish(cfg, "river:Phishing", "0", limit=30)
    config = write_config(cfg, tmp_path / "c.yaml")
    result = riverline(["run", "--config", str(config), "--until-idle", "1"], cli_env())
    message = assert_one_error(result, 1, "checkpoint.max_bytes", "join.max_pending_bytes")
    assert "larger than" in message
    assert "Redis unreachable" not in result.stderr
