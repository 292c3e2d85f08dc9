"""``riverline run``: the all-in-one consumer: events and labels in, predictions out, state
checkpointed to Redis.

It is a :class:`~consumers.writer.Writer` that serves: the same parts as the learner (lease,
checkpoints, inputs, processing, outputs, status), publishing a prediction for every event.
Predictions published after the last checkpoint may be published again after a crash
(at-least-once, with identical content); downstream deduplicates by event id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from consumers.checkpointer import require_secret
from consumers.writer import Writer

__all__ = ["Consumer", "require_secret", "write_report"]


class Consumer(Writer):
    """One process that predicts, serves, learns and checkpoints."""

    serves = True
    role = "run"


def write_report(report: dict[str, Any], path: str | Path) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report, indent=2, sort_keys=False, default=str) + "\n")
