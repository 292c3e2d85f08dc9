"""``--until-idle``: the stop rule shared by the writer's and the predictor's loops."""

from __future__ import annotations

from typing import Any

from consumers.idleness import IdleStop


class FakeInputs:
    def __init__(self) -> None:
        self.assigned = {("events", 0)}
        self.merge: list[Any] = []
        self.caught = True
        self.asked = 0

    def assignment(self) -> set[tuple[str, int]]:
        return self.assigned

    def caught_up(self) -> bool:
        self.asked += 1
        return self.caught


def idle(seconds: float | None = 2.0) -> tuple[IdleStop, FakeInputs]:
    inputs = FakeInputs()
    return IdleStop(seconds, inputs), inputs  # type: ignore[arg-type]


def test_stops_after_the_idle_time_once_caught_up() -> None:
    stop, _ = idle()
    assert not stop.after_turn(10.0, fetched=5, processed=5)
    assert not stop.after_turn(11.9, fetched=0, processed=0)
    assert stop.after_turn(12.0, fetched=0, processed=0)


def test_never_stops_without_a_limit() -> None:
    stop, _ = idle(None)
    stop.after_turn(0.0, 1, 1)
    assert not stop.after_turn(1e9, 0, 0)


def test_joining_the_group_is_not_idleness() -> None:
    stop, inputs = idle()
    inputs.assigned = set()
    assert not stop.after_turn(0.0, 0, 0)
    assert not stop.after_turn(100.0, 0, 0)  # never assigned: the clock has not started
    inputs.assigned = {("events", 0)}
    assert not stop.after_turn(100.0, 0, 0)
    assert stop.after_turn(102.0, 0, 0)


def test_records_held_for_order_are_not_the_end() -> None:
    stop, inputs = idle()
    stop.after_turn(0.0, 1, 1)
    inputs.merge = ["held"]
    assert not stop.after_turn(10.0, 0, 0)
    inputs.merge = []
    assert stop.after_turn(10.0, 0, 0)


def test_a_deferred_stop_waits() -> None:
    stop, _ = idle()
    stop.after_turn(0.0, 1, 1)
    assert not stop.after_turn(10.0, 0, 0, may_stop=False)  # e.g. checkpoints failing
    assert stop.after_turn(10.0, 0, 0)


def test_silence_from_a_broker_that_does_not_answer_restarts_the_clock() -> None:
    stop, inputs = idle()
    stop.after_turn(0.0, 1, 1)
    inputs.caught = False
    assert not stop.after_turn(10.0, 0, 0)
    assert inputs.asked == 1
    inputs.caught = True
    assert not stop.after_turn(10.0, 0, 0)  # the clock restarted at the failed check
