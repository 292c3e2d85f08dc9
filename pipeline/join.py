"""Events waiting for their labels, and labels waiting for their events.

Bounded by time-to-live: an event expires when more than ``ttl_events`` events came after it,
or when the watermark (latest event time seen) passed its time by ``ttl_seconds``. Labels that
came first wait under the same rule. Recently joined ids are remembered as long, so a duplicate
label counts once; with ``max_pending`` set, at most that many of them (the oldest are
forgotten first), so memory stays bounded even with no TTL.

>>> buf = JoinBuffer(ttl_events=2)
>>> buf.add_event(Pending("a", ts=0.0, x={}, model=None, fallback=None, served=None), 1)
(None, [])
>>> buf.match("a").id
'a'
>>> buf.match("a") is DUPLICATE
True
>>> buf.match("b") is None  # unknown so far: the caller parks it with park_label
True
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Final

from pipeline.schemas import Label


@dataclass(slots=True)
class Pending:
    """An event that was predicted and awaits its label."""

    id: str
    ts: float
    x: dict[str, Any]
    model: Any  # the model's prediction at event time, scored when the label comes
    fallback: Any
    served: Any
    attributes: dict[str, Any] = field(default_factory=dict)
    number: int = 0  # 1-based index of the event in the stream, for count-based expiry
    origin: Any = None  # where it came from (opaque to the core; the edge dead-letters with it)


@dataclass(slots=True)
class ParkedLabel:
    label: Label
    number: int  # events seen when it arrived
    origin: Any = None  # where it came from (opaque to the core; the edge dead-letters with it)


class _Duplicate:
    def __repr__(self) -> str:
        return "DUPLICATE"


DUPLICATE: Final = _Duplicate()


class JoinBuffer:
    def __init__(
        self,
        ttl_events: int | None = 100_000,
        ttl_seconds: float | None = None,
        max_pending: int | None = None,
    ) -> None:
        self.ttl_events = ttl_events
        self.ttl_seconds = ttl_seconds
        self.max_pending = max_pending
        # Insertion order is arrival order, so expiry only ever looks at the front.
        self.pending: OrderedDict[str, Pending] = OrderedDict()
        self.parked: OrderedDict[str, ParkedLabel] = OrderedDict()
        self.joined: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.pending)

    def has_event(self, event_id: str) -> bool:
        return event_id in self.pending or event_id in self.joined

    def add_event(self, pending: Pending, number: int) -> tuple[ParkedLabel | None, list[Pending]]:
        """Buffer an event; returns its label if that came first, and the events evicted
        (oldest first) to stay within ``max_pending``."""
        pending.number = number
        parked = self.parked.pop(pending.id, None)
        self.pending[pending.id] = pending
        evicted: list[Pending] = []
        while self.max_pending is not None and len(self.pending) > self.max_pending:
            evicted.append(self.pending.popitem(last=False)[1])
        return parked, evicted

    def match(self, event_id: str) -> Pending | _Duplicate | None:
        """Take the event a label belongs to, or say it is a duplicate or unknown."""
        pending = self.pending.pop(event_id, None)
        if pending is not None:
            joined = self.joined
            joined[event_id] = (pending.ts, pending.number)
            if self.max_pending is not None and len(joined) > self.max_pending:
                joined.popitem(last=False)
            return pending
        if event_id in self.joined or event_id in self.parked:
            return DUPLICATE
        return None

    def park_label(self, label: Label, number: int, origin: Any = None) -> list[ParkedLabel]:
        """Keep a label until its event comes; returns labels evicted to stay in bounds."""
        self.parked[label.id] = ParkedLabel(label, number, origin)
        evicted: list[ParkedLabel] = []
        while self.max_pending is not None and len(self.parked) > self.max_pending:
            evicted.append(self.parked.popitem(last=False)[1])
        return evicted

    def _expired(self, ts: float, number: int, now_ts: float, now_number: int) -> bool:
        if self.ttl_events is not None and now_number - number > self.ttl_events:
            return True
        return self.ttl_seconds is not None and now_ts - ts > self.ttl_seconds

    def expire(self, now_ts: float, now_number: int) -> tuple[list[Pending], list[ParkedLabel]]:
        """Drop what outlived the TTL; returns the unlabelled events and orphan labels.

        Each queue is in arrival order, so only its front is looked at: O(1) per call when
        nothing expires, which is nearly every call. The rule is ``_expired``'s, inlined.
        """
        # now_number - number > ttl_events, for ints, is number < min_number.
        min_number = now_number - self.ttl_events if self.ttl_events is not None else -1
        ttl_s = self.ttl_seconds if self.ttl_seconds is not None else float("inf")
        events: list[Pending] = []
        pending = self.pending
        while pending:
            front = pending[next(iter(pending))]
            if front.number >= min_number and not now_ts - front.ts > ttl_s:
                break
            events.append(pending.popitem(last=False)[1])
        labels: list[ParkedLabel] = []
        parked_labels = self.parked
        while parked_labels:
            parked = parked_labels[next(iter(parked_labels))]
            if parked.number >= min_number and not now_ts - parked.label.ts > ttl_s:
                break
            labels.append(parked_labels.popitem(last=False)[1])
        joined = self.joined
        while joined:
            ts, number = joined[next(iter(joined))]
            if number >= min_number and not now_ts - ts > ttl_s:
                break
            joined.popitem(last=False)
        return events, labels
