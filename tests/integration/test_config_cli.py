"""`riverline config check|schema` through the console script, as a user meets them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.cli import assert_one_error, cli_env, riverline, riverline_all

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_config_check_good_typo_and_bad_value(tmp_path: Path) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text(
        (REPO / "configs" / "demo.yaml")
        .read_text()
        .replace("min_labels:", "min_lables:")
        .replace("  partitions: 1", "  partitons: 1")
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("gating: {window: 0}\n")
    good, typod, badd, missing = riverline_all(
        [
            ["config", "check", str(REPO / "configs" / "demo.yaml")],
            ["config", "check", str(typo)],
            ["config", "check", str(bad)],
            ["config", "check", str(tmp_path / "missing.yaml")],
        ],
        cli_env(),
    )
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip().count("\n") == 0, good.stdout  # one line
    assert "OK" in good.stdout and "demo" in good.stdout
    assert "Traceback" not in good.stderr
    text = assert_one_error(typod, 2, "gating.min_lables", "kafka.partitons")
    assert "gating.min_lables: unknown field, did you mean `min_labels`?" in text
    assert "kafka.partitons: unknown field, did you mean `partitions`?" in text
    assert_one_error(badd, 2, "gating.window")
    assert_one_error(missing, 2, "missing.yaml")


def test_run_says_did_you_mean_too(tmp_path: Path) -> None:
    """The roles load configs with the same loader, so their error carries the suggestion."""
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: t\ncheckpoint: {evry_labels: 10}\n")
    result = riverline(["run", "--config", str(typo)], cli_env())
    text = assert_one_error(result, 2, "checkpoint.evry_labels")
    assert "did you mean `every_labels`?" in text


def test_config_schema_stdout_and_file(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    printed, written = riverline_all(
        [["config", "schema"], ["config", "schema", "--output", str(out)]], cli_env()
    )
    assert printed.returncode == 0, printed.stderr
    assert written.returncode == 0, written.stderr
    schema = json.loads(printed.stdout)
    assert json.loads(out.read_text()) == schema
    assert schema["additionalProperties"] is False  # editors flag a misspelt field
    assert "gating" in schema["properties"]
