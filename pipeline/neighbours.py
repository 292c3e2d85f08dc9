"""The labelled events most like a new one: what a reviewer sees beside the model's answer.

The review loop keeps the last ``kept`` labelled events (features and label) and, for an event
sent to people, finds the ``k`` nearest. The distance is the mean, over the new event's
features, of a per-feature gap in [0, 1]: for a number, the absolute difference scaled by that
feature's range among the kept events (capped at 1); for anything else (text, a bool), 0 if
equal and 1 if not; a feature missing on either side counts 1. Ties keep the more recent event
first. Pure, no I/O; part of the review book, so checkpoints carry it.

>>> kept = LabelledEvents(kept=4)
>>> kept.add("a", {"amount": 10.0, "country": "FR"}, False)
>>> kept.add("b", {"amount": 90.0, "country": "FR"}, True)
>>> kept.add("c", {"amount": 20.0, "country": "DE"}, False)
>>> found = kept.nearest({"amount": 80.0, "country": "FR"}, 2)
>>> [(n["id"], n["label"], n["distance"], n["differs"]) for n in found]
[('b', True, 0.0625, {'amount': 90.0}), ('a', False, 0.4375, {'amount': 10.0})]
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

# How many of the features that differ most a neighbour shows (its values for them): bounded,
# so a review request stays small whatever the number of features.
SHOWN_DIFFERENCES = 3


def _number(value: Any) -> float | None:
    """A finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _ranges(events: Any, names: list[str]) -> dict[str, float]:
    """Each numeric feature's range (max - min) among ``events``."""
    low: dict[str, float] = {}
    high: dict[str, float] = {}
    for _, x, _ in events:
        for name in names:
            v = _number(x.get(name))
            if v is None:
                continue
            if name not in low or v < low[name]:
                low[name] = v
            if name not in high or v > high[name]:
                high[name] = v
    return {name: high[name] - low[name] for name in low}


def gaps(x: dict[str, Any], other: dict[str, Any], ranges: dict[str, float]) -> dict[str, float]:
    """Each of ``x``'s features' gap in [0, 1] to ``other`` (see the module's docstring).

    >>> gaps({"a": 1.0, "b": "x", "c": 2}, {"a": 3.0, "b": "x"}, {"a": 4.0})
    {'a': 0.5, 'b': 0.0, 'c': 1.0}
    """
    found = {}
    for name, value in x.items():
        if name not in other or value is None or other[name] is None:
            found[name] = 1.0
            continue
        a, b = _number(value), _number(other[name])
        if a is not None and b is not None:
            span = ranges.get(name, 0.0)
            found[name] = 0.0 if a == b else (min(1.0, abs(a - b) / span) if span > 0 else 1.0)
        else:
            same = type(value) is type(other[name]) and value == other[name]  # True is not 1
            found[name] = 0.0 if same else 1.0
    return found


@dataclass
class LabelledEvents:
    """The last ``kept`` labelled events, oldest first: ``(id, features, label)``."""

    kept: int = 50
    events: deque[tuple[str, dict[str, Any], Any]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.events = deque(self.events, maxlen=self.kept)

    def add(self, event_id: str, x: dict[str, Any], label: Any) -> None:
        self.events.append((event_id, x, label))

    def nearest(self, x: dict[str, Any], k: int) -> list[dict[str, Any]]:
        """The ``k`` kept events nearest ``x``, nearest first: ``{id, label, distance,
        differs}``, ``differs`` the neighbour's values of the (at most 3) features where it
        differs most from ``x``, largest gap first."""
        if k <= 0 or not x or not self.events:
            return []
        names = list(x)
        ranges = _ranges(self.events, names)
        # The distance alone for every kept event (the hot loop: no dict per event); the gaps
        # by feature only for the k shown.
        numbers = {n: _number(v) for n, v in x.items()}
        spans = {n: ranges.get(n, 0.0) for n in names}
        scored = []
        # Newest first, so that equal distances keep the more recent event (nsmallest is stable).
        for age, (_, other, _) in enumerate(reversed(self.events)):
            total = 0.0
            for name, value in x.items():
                theirs = other.get(name)
                if value is None or theirs is None:
                    total += 1.0
                    continue
                mine = numbers[name]
                if mine is not None and (b := _number(theirs)) is not None:
                    span = spans[name]
                    if mine != b:
                        total += min(1.0, abs(mine - b) / span) if span > 0 else 1.0
                elif not (type(value) is type(theirs) and value == theirs):
                    total += 1.0
            scored.append((total / len(names), age))
        newest_first = list(reversed(self.events))
        found = []
        for distance, age in heapq.nsmallest(k, scored):
            event_id, other, label = newest_first[age]
            by_gap = sorted(gaps(x, other, ranges).items(), key=lambda kv: -kv[1])
            differs = {n: other.get(n) for n, gap in by_gap[:SHOWN_DIFFERENCES] if gap > 0}
            found.append(
                {"id": event_id, "label": label, "distance": round(distance, 6), "differs": differs}
            )
        return found
