"""Explanations for every model kind through Kafka (issue 20, Done when): a Hoeffding tree, an
adaptive random forest, a KNN behind a StandardScaler and a Gaussian naive Bayes on River's
Phishing, each run by ``riverline run`` with ``explain.enabled``; then ``riverline explain``
and ``riverline status`` on what they left."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import RiverlineConfig
from tests.conftest import Backends, build_test_config, delete_pipelines
from tests.integration.cli import cli_env, riverline, riverline_all
from tests.integration.helpers import json_values, publish, read_topic, write_config

pytestmark = pytest.mark.integration

EVENTS = 300  # a few hundred each: the runs share the broker and the machine
MODELS = {
    "tree": "tree.HoeffdingTreeClassifier",
    "forest": "forest.ARFClassifier(n_models=5, seed=1)",
    "knn": "preprocessing.StandardScaler | neighbors.KNNClassifier",
    "nb": "naive_bayes.GaussianNB",
}


@pytest.fixture(scope="module")
def runs(backends: Backends, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Each model's config file, config, and predictions, after one shared round of runs."""
    tmp = tmp_path_factory.mktemp("explain")
    suffix = uuid.uuid4().hex[:8]
    made: dict[str, tuple[Path, RiverlineConfig]] = {}
    for kind, spec in MODELS.items():
        cfg = build_test_config(
            backends,
            f"test-explain-{kind}-{suffix}",
            {
                "model": {"spec": spec},
                "evaluation": {"metric": "Accuracy"},
                "fallback": {"default": False},
                "gating": {"min_labels": 30, "window": 30},
                "explain": {
                    "enabled": True,
                    "top_k": 3,
                    "samples": 64,
                    "background": 16,
                    "importance": True,
                },
                "telemetry": {"status_every_seconds": 0.2},
            },
        )
        publish(cfg, "river:Phishing", "1", limit=EVENTS)
        made[kind] = (write_config(cfg, tmp / f"{kind}.yaml"), cfg)
    env = cli_env()
    results = riverline_all(
        [["run", "--config", str(path), "--until-idle", "2"] for path, _ in made.values()],
        env,
        timeout=300,
    )
    for result in results:
        assert result.returncode == 0, result.stderr
    out = {}
    for kind, (path, cfg) in made.items():
        assert cfg.kafka.bootstrap is not None
        events = {
            e["id"]: e["features"]
            for e in json_values(read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.events))
        }
        predictions = json_values(read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.predictions))
        out[kind] = (path, cfg, events, predictions)
    yield out
    delete_pipelines(backends, {cfg.name for _, cfg in made.values()})


@pytest.mark.parametrize("kind", MODELS)
def test_model_served_predictions_name_the_events_own_features(runs: Any, kind: str) -> None:
    _, _, events, predictions = runs[kind]
    assert len(predictions) == EVENTS
    served = [p for p in predictions if p["source"] == "model"]
    assert len(served) >= EVENTS // 3, f"the {kind} model served only {len(served)}"

    def names_own(p: dict[str, Any]) -> bool:
        terms = [e for e in p.get("explanation") or [] if "feature" in e]
        return bool(terms) and all(t["feature"] in events[p["id"]] for t in terms)

    explained = sum(names_own(p) for p in served)
    assert explained >= 0.95 * len(served), (kind, explained, len(served))
    # The fallback's answers carry none.
    assert all(p.get("explanation") is None for p in predictions if p["source"] != "model")


def test_riverline_explain_an_event_and_a_what_if(runs: Any) -> None:
    path, cfg, events, predictions = runs["forest"]
    env = cli_env()
    served = next(p for p in reversed(predictions) if p["source"] == "model")
    fallback = next(p for p in predictions if p["source"] != "model")
    common = ["--config", str(path), "--name", cfg.name, "--json"]
    what_if = {**events[served["id"]], "https": 1.0}
    recorded, recomputed, by_fallback, imagined = riverline_all(
        [
            ["explain", *common, "--id", served["id"]],
            ["explain", *common, "--id", served["id"], "--recompute"],
            ["explain", *common, "--id", fallback["id"]],
            ["explain", *common, "--features", json.dumps(what_if)],
        ],
        env,
    )
    for result in (recorded, recomputed, by_fallback, imagined):
        assert result.returncode == 0, result.stderr
    shown = json.loads(recorded.stdout)
    assert shown["explained_from"] == "the prediction record"
    assert shown["explanation"] == served["explanation"]
    assert shown["prediction"] == served["prediction"]
    for result in (recomputed, by_fallback, imagined):
        shown = json.loads(result.stdout)
        assert shown["explained_from"] == "recomputed"
        assert shown["model"].startswith("checkpoint")
        features = [e["feature"] for e in shown["explanation"] if "feature" in e]
        assert features and set(features) <= set(what_if)
    assert "fallback" in json.loads(by_fallback.stdout)["note"]
    # A what-if needs no broker (a forest's explanation needs no background).
    offline = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={"bootstrap": None})})
    offline_path = write_config(offline, path.with_name("offline.yaml"))
    alone = riverline(
        ["explain", "--config", str(offline_path), "--json", "--features", json.dumps(what_if)],
        env,
    )
    assert alone.returncode == 0, alone.stderr
    assert json.loads(alone.stdout)["explanation"] == json.loads(imagined.stdout)["explanation"]
    # Printed for people too.
    table = riverline(["explain", "--config", str(path), "--id", served["id"]], env)
    assert table.returncode == 0, table.stderr
    assert "contributions" in table.stdout and "method ensemble" in table.stdout
    missing = riverline(["explain", "--config", str(path), "--id", "no-such-id"], env)
    assert missing.returncode == 1 and "no event or prediction" in missing.stderr


def test_status_shows_the_cost_of_explaining_and_the_global_importance(runs: Any) -> None:
    path, _, events, predictions = runs["knn"]
    result = riverline(["status", "--config", str(path), "--explain"], cli_env())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    line = next(line for line in lines if "explained" in line)
    served = sum(p["source"] == "model" for p in predictions)
    assert f"{served} predictions" in line and "ms each" in line and "of the time" in line
    assert any("importance (top features)" in line for line in lines)
    # status --explain: the importance table, one row per feature of Phishing.
    assert "global importance at model version" in result.stdout
    features = set(next(iter(events.values())))
    shown = {line.split("│")[1].strip() for line in lines if line.count("│") == 3}
    assert features <= shown, (features, shown)
