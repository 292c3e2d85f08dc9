"""A partition the broker holds records of that fetches return nothing of is never a silent stall
(issue 18): the fetch wait is raised, and a warning names the partition and its offset.

The soak's case: Tansu answered every fetch of a large partition empty with a 10 ms wait, while
its high watermark (the lag) kept growing. The integration test (tests/integration/
test_fetch_starvation.py) covers an unknown lag on the real broker; this one the known lag and
the cap, with a clock of its own.
"""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace
from typing import Any

import pytest

import consumers.inputs as inputs_module
from consumers.inputs import FETCH_WAIT_CAP_MS, STARVED_AFTER_S, STARVED_WARN_EVERY_S, Inputs
from pipeline.config import ValidationConfig
from pipeline.ordering import OrderedMerge
from pipeline.telemetry import PipelineMetrics
from pipeline.validation import Validator

EVENTS = ("events", 0)
LABELS = ("labels", 0)


class StarvingConsumer:
    """Answers every poll with nothing while its lags say the broker holds more."""

    def __init__(self, waits: list[int | None]) -> None:
        self.lags: dict[tuple[str, int], int | None] = {EVENTS: 39_000, LABELS: 0}
        self.waits = waits  # what raise_fetch_wait answers, in turn
        self.raised = 0

    def poll(self, timeout_ms: int) -> dict[Any, Any]:
        return {}

    def assignment(self) -> set[tuple[str, int]]:
        return set(self.lags)

    def lag(self, partition: tuple[str, int]) -> int | None:
        return self.lags[partition]

    def raise_fetch_wait(self, cap_ms: int) -> int | None:
        assert cap_ms == FETCH_WAIT_CAP_MS
        self.raised += 1
        return self.waits.pop(0) if self.waits else None


def _inputs(
    consumer: StarvingConsumer, monkeypatch: pytest.MonkeyPatch
) -> tuple[Inputs, list[float]]:
    now = [100.0]
    monkeypatch.setattr(inputs_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    inputs = Inputs(
        consumer,  # type: ignore[arg-type]
        {"events": "event", "labels": "label"},
        Validator(ValidationConfig(), regression=False),
        OrderedMerge(max_idle_ms=0, clock=lambda: now[0]),
        threading.RLock(),
        PipelineMetrics(),
        lambda partition: None,
    )
    inputs.merge.assign([EVENTS, LABELS])
    inputs.expected = {EVENTS: 33_214, LABELS: None}
    return inputs, now


def test_a_starved_partition_raises_the_fetch_wait_and_is_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    consumer = StarvingConsumer(waits=[20, 40])
    inputs, now = _inputs(consumer, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="consumers.inputs"):
        inputs.fetch()
        now[0] += STARVED_AFTER_S / 2
        inputs.fetch()
        assert consumer.raised == 0 and not caplog.records  # not yet
        now[0] += STARVED_AFTER_S / 2
        inputs.fetch()
        assert consumer.raised == 1
        (record,) = caplog.records
        # Only the partition the broker holds more of; labels is caught up.
        assert "events[0] at offset 33214 (39000 records behind)" in record.getMessage()
        assert "labels" not in record.getMessage()
        assert "20 ms" in record.getMessage()
        inputs.fetch()
        assert consumer.raised == 1  # the new wait gets its own STARVED_AFTER_S
        now[0] += STARVED_AFTER_S
        inputs.fetch()
        assert consumer.raised == 2 and "40 ms" in caplog.records[-1].getMessage()
        # At the cap: a "no progress" warning, repeated every STARVED_WARN_EVERY_S, not per fetch.
        now[0] += STARVED_AFTER_S
        inputs.fetch()
        inputs.fetch()
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) == 3 and warnings[-1].startswith("no progress")
        assert "events[0] at offset 33214" in warnings[-1]
        now[0] += STARVED_WARN_EVERY_S
        inputs.fetch()
        assert len(caplog.records) == 4


def test_a_partition_that_delivers_or_is_paused_is_not_starved(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    consumer = StarvingConsumer(waits=[20])
    inputs, now = _inputs(consumer, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="consumers.inputs"):
        consumer.lags[EVENTS] = 0
        for _ in range(3):
            inputs.fetch()
            now[0] += STARVED_AFTER_S
        consumer.lags[EVENTS] = 5
        inputs.paused = True  # nothing is fetched on purpose
        for _ in range(3):
            inputs.fetch()
            now[0] += STARVED_AFTER_S
    assert consumer.raised == 0 and not caplog.records


def test_partitions_starved_together_raise_the_one_wait_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    consumer = StarvingConsumer(waits=[20, 40])
    consumer.lags[LABELS] = 7
    inputs, now = _inputs(consumer, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="consumers.inputs"):
        inputs.fetch()
        now[0] += STARVED_AFTER_S
        inputs.fetch()
        inputs.fetch()
    assert consumer.raised == 1
    (record,) = caplog.records
    assert "events[0] at offset 33214" in record.getMessage()
    assert "labels[0] at offset its start (7 records behind)" in record.getMessage()
