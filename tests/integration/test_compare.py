"""``riverline compare`` against the real thing: each in-process run equals ``replay`` + ``run``
of its config through the broker, field for field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cli import cli_env, riverline
from tests.integration.helpers import consume, learning_state, publish, write_config

pytestmark = pytest.mark.integration

IN_PROCESS_ONLY = ("compare",)  # what compare adds: the run's name, file and settings


def as_json(report: dict[str, Any]) -> dict[str, Any]:
    """The report as it reads back from a JSON file (tuples as lists, keys as strings)."""
    return json.loads(json.dumps(report, default=str))  # type: ignore[no-any-return]


def test_compare_equals_replay_and_run_through_kafka(
    make_config: Any, pipeline_name: str, tmp_path: Path
) -> None:
    common: dict[str, Any] = {
        "kafka": {"partitions": 2},  # the merge across partitions is part of what must match
        "evaluation": {"metric": "Accuracy", "extra_metrics": ["F1"]},
        "fallback": {
            "rules": [{"feature": "popup_window", "op": ">=", "value": 1.0, "prediction": False}],
            "default": True,
        },
    }
    first = make_config(
        {
            **common,
            "model": {"spec": "preprocessing.StandardScaler | linear_model.LogisticRegression"},
            "gating": {"min_labels": 50, "window": 100, "margin": 0.01},
        }
    )
    second = make_config(
        {
            **common,
            "kafka": {**common["kafka"], "topics": first.kafka.topics.model_dump()},
            "model": {"spec": "tree.HoeffdingTreeClassifier(grace_period=50)"},
            "gating": {"min_labels": 100, "window": 50, "margin": 0.05},
        },
        name=f"{pipeline_name}-b",
    )
    publish(first, "river:Phishing", "25", limit=600)
    through_kafka = [consume(first), consume(second)]

    paths = [write_config(cfg, tmp_path / f"{i}.yaml") for i, cfg in enumerate((first, second))]
    out = tmp_path / "compare.json"
    args = ["--source", "river:Phishing", "--label-delay", "25", "--limit", "600", "--jobs", "2"]
    result = riverline(["compare", *map(str, paths), *args, "--report", str(out)], cli_env())
    assert result.returncode == 0, result.stderr
    runs = json.loads(out.read_text())["runs"]
    assert [run["compare"]["config"] for run in runs] == list(map(str, paths))  # order given
    for run, kafka in zip(runs, through_kafka, strict=True):
        assert kafka["promotions"], "the case must exercise the gating"
        in_process = {k: v for k, v in learning_state(run).items() if k not in IN_PROCESS_ONLY}
        assert in_process == as_json(learning_state(kafka))
