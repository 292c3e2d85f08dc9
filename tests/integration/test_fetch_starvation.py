"""A broker that answers fetches empty while it holds records must not stop a pipeline silently
(issue 18, "a pipeline that stops").

Tansu answers a fetch with no records once the fetch's wait ran out before it read its log, and
its reads slow down as a partition grows: in the soak run (200 events/s) every fetch of a
~33,000-record partition came back empty with riverline's 10 ms wait (40 ms read it), for ever,
while ``riverline status`` showed the lag growing. Here a wait of 0 ms makes Tansu answer every
fetch with no records (and no high watermark) from the start, whatever the partition's size: the
same starvation in seconds. Before the fix ``run --until-idle 3`` read nothing, logged nothing,
and exited 0 (an unknown lag passed for caught up); the soak's case, a known lag > 0, takes the
same path (a starved partition is one with lag > 0 or unknown).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from pipeline.kafka.clients import ensure_topics
from tests.integration.cli import cli_env, riverline
from tests.integration.helpers import read_topic, write_config

pytestmark = pytest.mark.integration

TS = 1_700_000_000.0
EVENTS = 30
BIG = 900_000  # the soak's hostile event_too_large / label_too_large records
REPO = Path(__file__).resolve().parents[2]


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def test_run_gets_records_a_broker_answers_empty_at_first_and_says_so(
    make_config: Any, tmp_path: Path
) -> None:
    cfg = make_config(
        {
            "kafka": {"client": "kafka-python", "fetch_max_wait_ms": 0},
            "validation": {"max_record_bytes": 1_048_576},
            "evaluation": {"metric": "Accuracy"},
        }
    )
    assert cfg.kafka.bootstrap is not None
    events, labels = cfg.kafka.topics.events, cfg.kafka.topics.labels
    ensure_topics(cfg.kafka, cfg.kafka.bootstrap, [events, labels])
    producer = KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap, max_request_size=1_048_576)
    for i in range(EVENTS):
        eid = f"e{i}"
        producer.send(
            events, key=eid.encode(), value=_dumps({"id": eid, "ts": TS + i, "features": {"x": i}})
        )
        producer.send(
            labels, key=eid.encode(), value=_dumps({"id": eid, "ts": TS + i + 0.5, "label": True})
        )
        if i % 10 == 5:  # ~900 KB records interleaved with the small ones, in both topics
            big = f"big{i}"
            producer.send(
                events,
                key=big.encode(),
                value=_dumps({"id": big, "ts": TS + i + 0.1, "features": {"s": "x" * BIG}}),
            )
            producer.send(
                labels,
                key=big.encode(),
                value=_dumps({"id": big, "ts": TS + i + 0.2, "label": True, "pad": "y" * BIG}),
            )
    producer.flush()
    producer.close()

    config = write_config(cfg, tmp_path / "c.yaml")
    report = tmp_path / "report.json"
    result = riverline(
        ["run", "--config", str(config), "--until-idle", "3", "--report", str(report)],
        cli_env(PYTHONPATH=str(REPO)),
        timeout=90,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    predictions = [
        json.loads(r.value) for r in read_topic(cfg.kafka.bootstrap, cfg.kafka.topics.predictions)
    ]
    assert sorted(p["id"] for p in predictions) == sorted(f"e{i}" for i in range(EVENTS)), (
        result.stderr[-3000:]
    )
    assert json.loads(report.read_text())["labels"] == EVENTS
    # Never silent: the starved partitions are named, with their offsets.
    assert "fetches returned no records" in result.stderr, result.stderr[-3000:]
    assert f"{events}[0] at offset " in result.stderr
