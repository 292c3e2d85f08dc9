"""No single record stops a pipeline: records near the broker's size limit, outputs larger than
it, and a record the core fails on are dead-lettered, and every role goes on (issue 18.1).

Before the fix, a dead letter (its value base64-encoded: +33%) or a prediction keyed by a huge
id exceeded the producer's message size and ``run``, ``learner`` and ``predictor`` exited 1 on
it, again on every restart.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from pipeline.config import RiverlineConfig
from pipeline.kafka.clients import ensure_topics
from tests.integration.cli import cli_env, riverline_all
from tests.integration.helpers import read_topic, write_config

pytestmark = pytest.mark.integration

TS = 1_700_000_000.0
BIG = 800_000  # base64 makes it 1,066,668 bytes: over every client's default message size
# A valid event (under validation.max_record_bytes); its prediction, keyed by it, is not.
HUGE_KEY = "k" * 999_900
SMALL = 6
REPO = Path(__file__).resolve().parents[2]


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def _records() -> list[tuple[str, bytes | None, bytes]]:
    """(kind, key, value) in event-time order: the hostile records come first."""
    records: list[tuple[str, bytes | None, bytes]] = [
        ("event", b"big", _dumps({"id": "big", "ts": TS, "features": {"s": "x" * BIG}})),
        ("label", b"e1", _dumps({"id": "e1", "ts": TS, "label": True, "note": "x" * BIG})),
        # Unkeyed: with its key as the record's key, the event would be too large to publish.
        ("event", None, _dumps({"id": "k", "key": HUGE_KEY, "ts": TS + 0.1, "features": {}})),
        ("event", b"w", _dumps({"id": "w", "ts": TS + 0.2, "features": {"x": 1.0, "weird": 1}})),
    ]
    for i in range(SMALL):
        records.append(
            ("event", f"e{i}".encode(), _dumps({"id": f"e{i}", "ts": TS + 1 + i, "features": {}}))
        )
        records.append(
            ("label", f"e{i}".encode(), _dumps({"id": f"e{i}", "ts": TS + 1.5 + i, "label": True}))
        )
    return records


def _config(make_config: Any) -> RiverlineConfig:
    return make_config(
        {
            # The huge-key event is valid; the 800 KB string is not (value_too_long).
            "validation": {"max_record_bytes": 1_048_576},
            "fallback": {
                "callable": "tests.unit.rules_for_tests:list_for_weird",
                "default": False,
            },
            "evaluation": {"metric": "Accuracy"},
        }
    )


def _publish(cfg: RiverlineConfig) -> dict[bytes, bytes]:
    """The records, in order, on one partition each; returns the hostile values by their id."""
    assert cfg.kafka.bootstrap is not None
    topics = {"event": cfg.kafka.topics.events, "label": cfg.kafka.topics.labels}
    ensure_topics(cfg.kafka, cfg.kafka.bootstrap, list(topics.values()))
    producer = KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap, max_request_size=1_048_576)
    for kind, key, value in _records():
        producer.send(topics[kind], key=key, value=value).get(timeout=30)
    producer.close()
    return {value[:20]: value for _, _, value in _records()[:4]}


def _run_roles(cfg: RiverlineConfig, tmp: Path, roles: list[str]) -> list[dict[str, Any]]:
    config = write_config(cfg, tmp / "c.yaml")
    env = cli_env(PYTHONPATH=str(REPO))
    results = riverline_all(
        [
            [role, "--config", str(config), "--until-idle", "3", "--report", str(tmp / role)]
            for role in roles
        ],
        env,
    )
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
        # The record that raised is logged once (with its traceback: a bug to fix), by reason.
        assert "dead-lettered as processing_error and skipped" in result.stderr
    return [json.loads((tmp / role).read_text()) for role in roles]


def _letters(cfg: RiverlineConfig) -> list[tuple[Any, dict[str, Any]]]:
    assert cfg.kafka.bootstrap is not None
    records = read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.dead_letters)
    for record in records:
        # Nothing riverline publishes is larger than kafka.max_message_bytes.
        size = len(record.value) + len(record.key or b"")
        assert size <= cfg.kafka.max_message_bytes, size  # type: ignore[attr-defined]
    return [(record, json.loads(record.value)) for record in records]


def _check_truncated(letter: dict[str, Any], original: bytes) -> None:
    """A dead letter too large to carry its value whole says how to find and check it."""
    assert letter["value_truncated"] is True
    assert letter["value_length"] == len(original)
    assert letter["value_sha256"] == hashlib.sha256(original).hexdigest()
    assert letter["offset"] >= 0 and letter["topic"]


def test_run_dead_letters_oversized_and_failing_records_and_goes_on(
    transport: str, make_config: Any, tmp_path: Path
) -> None:
    cfg = _config(make_config)
    originals = _publish(cfg)
    (report,) = _run_roles(cfg, tmp_path, ["run"])
    assert cfg.kafka.bootstrap is not None
    predictions = [
        json.loads(r.value) for r in read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.predictions)
    ]
    # Every event after the hostile ones was predicted; the labels were learned.
    assert sorted(p["id"] for p in predictions) == [f"e{i}" for i in range(SMALL)]
    assert report["labels"] == SMALL
    letters = _letters(cfg)
    reasons = Counter(letter["reason"] for _, letter in letters)
    assert reasons == {
        "value_too_long": 1,
        "unknown_field": 1,
        "output_too_large": 1,
        "processing_error": 1,
    }
    assert report["dead_letters"] == dict(sorted(reasons.items()))
    by_reason = {letter["reason"]: letter for _, letter in letters}
    big_event, big_label, huge_key = list(originals.values())[:3]
    _check_truncated(by_reason["value_too_long"], big_event)
    _check_truncated(by_reason["unknown_field"], big_label)
    _check_truncated(by_reason["output_too_large"], huge_key)
    assert "prediction" in by_reason["output_too_large"]["message"]
    weird = by_reason["processing_error"]
    assert "ValidationError" in weird["message"]
    assert weird["value_truncated"] is False
    assert json.loads(base64.b64decode(weird["value_b64"]))["id"] == "w"


def test_learner_and_predictor_dead_letter_and_go_on(make_config: Any, tmp_path: Path) -> None:
    cfg = _config(make_config)
    _publish(cfg)
    learner, predictor = _run_roles(cfg, tmp_path, ["learner", "predictor"])
    assert cfg.kafka.bootstrap is not None
    predictions = [
        json.loads(r.value) for r in read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.predictions)
    ]
    assert sorted(p["id"] for p in predictions) == [f"e{i}" for i in range(SMALL)]
    assert learner["labels"] == SMALL
    # The predictor dead-letters invalid events (the learner counts them only), the learner
    # invalid labels; each what its own core failed on.
    assert learner["dead_letters"] == {
        "processing_error": 1,
        "unknown_field": 1,
        "value_too_long": 1,
    }
    assert predictor["dead_letters"] == {
        "output_too_large": 1,
        "processing_error": 1,
        "value_too_long": 1,
    }
    reasons = Counter(letter["reason"] for _, letter in _letters(cfg))
    assert reasons == {
        "value_too_long": 1,
        "unknown_field": 1,
        "output_too_large": 1,
        "processing_error": 2,
    }
