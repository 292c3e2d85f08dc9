"""Valid but huge numbers through ``riverline replay`` and ``riverline run`` (issue 18 point 2),
and labels of the wrong type (point 11): the model ends as on the stream without them."""

from __future__ import annotations

import base64
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from producers.sources import open_source
from tests.conftest import TEST_SECRET
from tests.integration.cli import riverline, riverline_all
from tests.integration.helpers import json_values, read_topic, write_config

pytestmark = pytest.mark.integration

POISON = {"poison-1": 1e308, "poison-2": -1e308}  # every feature of these two events
# Inserted before these Phishing rows, mid-stream, once the model serves.
BEFORE = {"400": "poison-1", "700": "poison-2"}


def write_sources(tmp_path: Path) -> tuple[Path, Path]:
    """Phishing as JSONL, and the same with two labelled events of huge features in it."""
    clean, poisoned = tmp_path / "clean.jsonl", tmp_path / "poisoned.jsonl"
    with clean.open("w") as c, poisoned.open("w") as p:
        for record in open_source("river:Phishing"):
            row = {"id": record.id, "ts": record.ts, **record.features, "label": record.label}
            if record.id in BEFORE:
                name = BEFORE[record.id]
                huge = {k: POISON[name] for k in record.features}
                p.write(json.dumps({"id": name, "ts": record.ts - 0.5, **huge, "label": True}))
                p.write("\n")
            line = json.dumps(row) + "\n"
            c.write(line)
            p.write(line)
    return clean, poisoned


def test_huge_numbers_leave_the_model_as_without_them(make_config: Any, tmp_path: Path) -> None:
    base = {
        "model": {"spec": "preprocessing.StandardScaler | linear_model.LogisticRegression"},
        "evaluation": {"metric": "Accuracy", "extra_metrics": ["LogLoss"]},
        "fallback": {"default": False},
        "gating": {"min_labels": 50},
        "validation": {"labels": [True, False]},
    }
    clean = make_config(base, name=f"{make_config(base).name}-clean")
    guarded = make_config(base, name=f"{clean.name}-guarded")
    # No limit at the edge: the huge numbers reach the model, which must protect itself. (An
    # override of None means "unset" to load_config; the config file says null.)
    lifted = make_config(base, name=f"{clean.name}-lifted")
    lifted = lifted.model_copy(
        update={"validation": lifted.validation.model_copy(update={"max_abs_value": None})}
    )
    clean_src, poisoned_src = write_sources(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERLINE_")}
    env["RIVERLINE_CHECKPOINT_SECRET"] = TEST_SECRET
    files = {c.name: write_config(c, tmp_path / f"{c.name}.yaml") for c in (clean, guarded, lifted)}
    sources = {clean.name: clean_src, guarded.name: poisoned_src, lifted.name: poisoned_src}
    replays = riverline_all(
        [
            [
                *("replay", "--config", str(files[name]), "--source", str(sources[name])),
                "--label-delay",
                "50",
            ]
            for name in files
        ],
        env,
    )
    for replayed in replays:
        assert replayed.returncode == 0, replayed.stderr
    # Point 11: labels equal to True/False but not bools, for events that exist.
    producer = KafkaProducer(bootstrap_servers=guarded.kafka.bootstrap)
    for i, value in enumerate([1, 0, 1.0]):
        raw = json.dumps({"id": str(i), "ts": 1_700_000_000.0 + i, "label": value}).encode()
        producer.send(guarded.kafka.topics.labels, key=str(i).encode(), value=raw)
    producer.flush()
    producer.close()

    runs = riverline_all(
        [
            [
                *("run", "--config", str(files[name]), "--until-idle", "3"),
                "--report",
                str(tmp_path / f"{name}.json"),
            ]
            for name in files
        ],
        env,
        timeout=300,
    )
    for ran in runs:
        assert ran.returncode == 0, ran.stderr
        assert "Traceback" not in ran.stderr
    reports = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in files}
    expected = reports[clean.name]["metrics"]["model"]
    for name in (guarded.name, lifted.name):
        got = reports[name]["metrics"]["model"]
        assert all(math.isfinite(v) for v in got.values()), (name, got)
        for metric in ("Accuracy", "LogLoss"):
            assert abs(got[metric] - expected[metric]) <= 0.01, (name, metric, got, expected)
    assert reports[clean.name]["dead_letters"] == {}

    # At the edge: both events dead-lettered, naming the feature; the wrong-typed labels too.
    assert reports[guarded.name]["dead_letters"] == {
        "label_not_allowed": 3,
        "value_out_of_range": 2,
    }
    assert reports[guarded.name]["model_rollbacks"] == 0
    letters = json_values(read_topic(guarded.kafka.bootstrap, guarded.kafka.topics.dead_letters))
    out_of_range = [d for d in letters if d["reason"] == "value_out_of_range"]
    assert sorted(json.loads(base64.b64decode(d["value_b64"]))["id"] for d in out_of_range) == [
        "poison-1",
        "poison-2",
    ]
    assert all(
        "features." in d["message"] and "validation.max_abs_value" in d["message"]
        for d in out_of_range
    )
    assert sorted(
        json.loads(base64.b64decode(d["value_b64"]))["label"]
        for d in letters
        if d["reason"] == "label_not_allowed"
    ) == [0, 1, 1.0]

    # In the model: rolled back twice, counted, logged, each event dead-lettered.
    report = reports[lifted.name]
    assert report["model_rollbacks"] == 2
    assert report["dead_letters"] == {"model_non_finite": 2}
    assert report["labels"] == reports[clean.name]["labels"] + 2  # scored, not learned
    assert report["model_version"] == reports[clean.name]["model_version"]
    letters = json_values(read_topic(lifted.kafka.bootstrap, lifted.kafka.topics.dead_letters))
    assert sorted(json.loads(base64.b64decode(d["value_b64"]))["id"] for d in letters) == [
        "poison-1",
        "poison-2",
    ]
    lifted_run = runs[list(files).index(lifted.name)]
    assert lifted_run.stderr.count("rolled back") == 2, lifted_run.stderr
    status = riverline(["status", "--config", str(files[lifted.name])], env)
    assert status.returncode == 0, status.stderr
