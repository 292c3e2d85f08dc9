"""The command line's error paths: clear messages, distinct exit statuses, no tracebacks."""

from pathlib import Path

from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()


def test_bad_config_value_exits_2_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: ok\ngating: {window: -3}\n")
    result = runner.invoke(app, ["run", "--config", str(bad), "--bootstrap", "127.0.0.1:1"])
    assert result.exit_code == 2
    assert "gating.window" in result.output
    assert "Traceback" not in result.output


def test_bad_model_flag_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "--model", "linear_model.Nope", "--bootstrap", "x:1"])
    assert result.exit_code == 2
    assert "model.spec" in result.output and "Nope" in result.output


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "--config", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2
    assert "cannot read config file" in result.output


def test_run_without_a_broker_says_how_to_get_one(monkeypatch: object) -> None:
    result = runner.invoke(
        app,
        ["run", "--redis-url", "redis://127.0.0.1:6379/0"],
        env={"RIVERLINE_KAFKA_BOOTSTRAP": "", "RIVERLINE_CHECKPOINT_SECRET": "s"},
    )
    assert result.exit_code == 2
    assert "kafka.bootstrap" in result.output


def test_missing_secret_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["run", "--bootstrap", "127.0.0.1:1", "--redis-url", "redis://127.0.0.1:6379/0"],
        env={"RIVERLINE_CHECKPOINT_SECRET": ""},
    )
    assert result.exit_code == 2
    assert "checkpoint.secret" in result.output


def test_bad_label_delay_is_a_usage_error() -> None:
    result = runner.invoke(app, ["replay", "--source", "river:Phishing", "--label-delay", "soon"])
    assert result.exit_code == 2
    assert "label delay" in result.output


def test_gating_lines_say_what_was_served_and_by_whom() -> None:
    """Issue 19: a split learner said "the model took over at label 279" while the predictors
    served nothing from the model."""
    from pipeline.cli.summary import gating_lines

    promoted = {
        "metric": "Accuracy",
        "promotions": [
            {"kind": "promotion", "label_index": 279, "model_metric": 0.9, "fallback_metric": 0.8}
        ],
        "demotions": [],
    }
    split = {
        **promoted,
        "predictions_by_source": {"default": 1000},
        "served_from_predictions": {"scored": 1000},
    }
    (first, _decision) = gating_lines(split)
    assert "took over" not in first
    assert (
        "promoted at label 279, but served none of the 1000 predictions published by the "
        "predictors" in first
    )
    run = {**promoted, "predictions_by_source": {"default": 300, "model": 700}}
    assert "took over at label 279; the table above" in gating_lines(run)[0]


def test_log_lines_show_control_characters_escaped_and_keep_tracebacks() -> None:
    """A log message quoting an id must not drive the terminal nor forge a second log line."""
    import logging
    import sys

    from pipeline.cli.common import _ShownFormatter

    formatter = _ShownFormatter("%(levelname)s %(message)s")
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "t",
        logging.WARNING,
        __file__,
        1,
        "event %s: %s",
        ("a\x1b]0;x\x07", "b\nINFO forged"),
        exc_info,
    )
    line, *traceback = formatter.format(record).split("\n")
    assert line == "WARNING event a\\x1b]0;x\\x07: b\\x0aINFO forged"
    assert traceback[0].startswith("Traceback") and "ValueError: boom" in traceback[-1]
