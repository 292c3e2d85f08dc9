"""Events waiting for their labels, and labels waiting for their events.

Bounded by time-to-live: an event expires when more than ``ttl_events`` events came after it,
or when the watermark (latest event time seen) passed its time by ``ttl_seconds``. Labels that
came first wait under the same rule. Recently joined ids are remembered as long, so a duplicate
label counts once; with ``max_pending`` set, at most that many of them (the oldest are
forgotten first), so memory stays bounded even with no TTL. A full buffer evicts its oldest
event (dead-lettered by the core) only if that event's TTL does not end with this event; one
whose TTL does expires instead, as by TTL: with ``max_pending == ttl_events`` (the defaults)
the TTL's own window never evicts.

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

import pickle
from collections import OrderedDict, deque
from collections.abc import Sequence
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
    # The bytes it stands for, against ``max_pending_bytes`` (its record's, as the edge said).
    # Last, and unset in a Pending pickled before it existed: JoinBuffer.__setstate__ sets it.
    size: int = 0


@dataclass(slots=True)
class ParkedLabel:
    label: Label
    number: int  # events seen when it arrived
    origin: Any = None  # where it came from (opaque to the core; the edge dead-letters with it)
    size: int = 0  # the bytes it stands for, against ``max_pending_bytes``


class _Duplicate:
    def __repr__(self) -> str:
        return "DUPLICATE"


DUPLICATE: Final = _Duplicate()


# A horizon no event count reaches: nothing can expire by count.
_NEVER: Final = 1 << 62
_NOTHING: Final[tuple[None, tuple[()]]] = (None, ())  # no label came first, none evicted
_new = object.__new__


class _PickledAsOrderedDict:
    """A dict that pickles as the OrderedDict of its items, the shape checkpoints have: the
    dict is pickled as it is (no OrderedDict built to be pickled), read back as one."""

    __slots__ = ("items",)

    def __init__(self, items: dict[str, Any]) -> None:
        self.items = items

    def __reduce__(self) -> tuple[type[OrderedDict[str, Any]], tuple[dict[str, Any]]]:
        return OrderedDict, (self.items,)


def _measure(entry: Pending | ParkedLabel) -> int:
    """The size of an entry restored from a checkpoint written before sizes were kept (its
    pickle's: what it costs a checkpoint); set on it, and returned."""
    size = getattr(entry, "size", None)
    if not size:
        if isinstance(entry, Pending):
            size = len(pickle.dumps((entry.x, entry.attributes, entry.origin), protocol=5))
        else:
            size = len(pickle.dumps((entry.label, entry.origin), protocol=5))
        entry.size = size
    return size


class JoinBuffer:
    """The three queues (events, parked labels, joined ids), each in arrival order.

    ``horizon`` is an event count before which no queue's front can expire (0: look now). It
    lets ``expire`` answer "nothing" without looking, which is nearly every call: it is a lower
    bound on every front's expiry, kept by lowering it wherever a front can move earlier (an
    insert into an empty queue, a joined id evicted from the front) and set again from the
    fronts when ``expire`` looks. Only with a count TTL alone: time-to-live in seconds compares
    times, so with ``ttl_seconds`` set every call looks. Not pickled: a restored buffer looks
    at once. Event numbers must arrive in order (the core's event count); if they ever do not,
    every call looks.
    """

    horizon = 0  # class defaults: what a restored (or old) buffer starts from
    max_pending_bytes: int | None = None
    pending_bytes = 0  # the sizes of the events waiting, and of the labels parked
    parked_bytes = 0
    _newest = -1  # the largest event number added, to see an out-of-order one
    _unordered = False

    def __init__(
        self,
        ttl_events: int | None = 100_000,
        ttl_seconds: float | None = None,
        max_pending: int | None = None,
        max_pending_bytes: int | None = None,
    ) -> None:
        self.ttl_events = ttl_events
        self.ttl_seconds = ttl_seconds
        self.max_pending = max_pending
        # Each queue's budget in bytes: counts alone do not bound the state (nor a checkpoint,
        # one Redis value) when records are large.
        self.max_pending_bytes = max_pending_bytes
        self.pending_bytes = 0
        self.parked_bytes = 0
        # Insertion order is arrival order, so expiry only ever looks at the front.
        self.pending: OrderedDict[str, Pending] = OrderedDict()
        self.parked: OrderedDict[str, ParkedLabel] = OrderedDict()
        # Joined ids leave only from the front, so a plain dict keeps them in arrival order;
        # its order is kept in a deque too, for the front a dict cannot give in O(1) (popping
        # a dict's front leaves holes ``next(iter())`` walks). Cheaper per label than an
        # OrderedDict; pickled as one, as always.
        self.joined: dict[str, tuple[float, int]] = {}
        self._joined_order: deque[str] = deque()
        # Events a full buffer let go at the end of their TTL, for ``expire`` to hand out.
        self._due: list[Pending] = []

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for derived in ("horizon", "_newest", "_unordered", "_joined_order"):
            state.pop(derived, None)
        if not self._due:  # as between records (the core expires in the call that fills it)
            del state["_due"]
        state["joined"] = _PickledAsOrderedDict(self.joined)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        joined = self.joined
        if type(joined) is _PickledAsOrderedDict:  # a shallow copy: the state as it was given
            joined = joined.items
        self.joined = dict(joined)
        self._joined_order = deque(self.joined)
        self._due = list(state.get("_due", ()))
        if self._due:
            self.horizon = 0
        if "pending_bytes" not in state:  # a buffer from before sizes: measured once
            self.pending_bytes = sum(_measure(p) for p in self.pending.values())
            self.parked_bytes = sum(_measure(p) for p in self.parked.values())
        for queue in (self.pending, self.parked):
            if queue:
                self._newest = max(self._newest, queue[next(reversed(queue))].number)

    def __len__(self) -> int:
        return len(self.pending)

    def _lower_horizon(self, number: int) -> None:
        """A front may now be the entry of event ``number``: it expires from number+ttl+1."""
        if self.ttl_events is not None and number + self.ttl_events + 1 < self.horizon:
            self.horizon = number + self.ttl_events + 1

    def has_event(self, event_id: str) -> bool:
        return event_id in self.pending or event_id in self.joined

    def add_event(self, pending: Pending, number: int) -> tuple[ParkedLabel | None, list[Pending]]:
        """Buffer an event; returns its label if that came first, and the events evicted
        (oldest first) to stay within ``max_pending``. :meth:`add` with the event's fields
        (it keeps a Pending of its own, numbered ``number``)."""
        parked, evicted = self.add(
            pending.id,
            pending.ts,
            pending.x,
            pending.model,
            pending.fallback,
            pending.served,
            pending.attributes,
            number,
            pending.origin,
            pending.size,
        )
        return parked, list(evicted)

    def add(
        self,
        event_id: str,
        ts: float,
        x: dict[str, Any],
        model: Any,
        fallback: Any,
        served: Any,
        attributes: dict[str, Any],
        number: int,
        origin: Any = None,
        size: int = 0,
    ) -> tuple[ParkedLabel | None, Sequence[Pending]]:
        """Buffer an event (see :meth:`add_event`): the event path's, which builds the Pending
        here without calling its class (a third of the cost) and returns the evictions as an
        empty tuple when there are none (nearly always), not a new list.

        >>> buf = JoinBuffer(ttl_events=2)
        >>> buf.add("a", 0.0, {}, None, None, None, {}, 1)
        (None, ())
        >>> buf.match("a").number
        1
        """
        pending: Pending = _new(Pending)
        pending.id = event_id
        pending.ts = ts
        pending.x = x
        pending.model = model
        pending.fallback = fallback
        pending.served = served
        pending.attributes = attributes
        pending.number = number
        pending.origin = origin
        pending.size = size
        if number < self._newest:
            self._unordered = True
            self.horizon = 0
        else:
            self._newest = number
        queue = self.pending
        if not queue:
            self._lower_horizon(number)
        parked = self.parked.pop(event_id, None) if self.parked else None
        if parked is not None:
            self.parked_bytes -= parked.size
        queue[event_id] = pending
        self.pending_bytes = pending_bytes = self.pending_bytes + size
        max_pending = self.max_pending
        max_bytes = self.max_pending_bytes
        if (max_pending is None or len(queue) <= max_pending) and (
            max_bytes is None or pending_bytes <= max_bytes
        ):
            return _NOTHING if parked is None else (parked, ())
        evicted: list[Pending] = []
        ttl = self.ttl_events
        # Never the new event itself: the core may join it at once with its parked label.
        while len(queue) > 1 and (
            (max_pending is not None and len(queue) > max_pending)
            or (max_bytes is not None and self.pending_bytes > max_bytes)
        ):
            front = queue.popitem(last=False)[1]
            self.pending_bytes -= front.size
            if ttl is not None and number - front.number >= ttl:
                # Its TTL ends before the next event in any case (a buffer that holds
                # ``ttl_events`` events, the defaults, is full with the TTL's own window plus
                # the new one): it expires, as by TTL (counted, not dead-lettered), at once.
                self._due.append(front)
                self.horizon = 0
            else:
                evicted.append(front)
        if not evicted:
            return _NOTHING if parked is None else (parked, ())
        return parked, evicted

    def match(self, event_id: str) -> Pending | _Duplicate | None:
        """Take the event a label belongs to, or say it is a duplicate or unknown."""
        pending = self.pending.pop(event_id, None)
        if pending is not None:
            self.pending_bytes -= pending.size
            joined = self.joined
            if not joined:
                self._lower_horizon(pending.number)
            known = len(joined)
            joined[event_id] = (pending.ts, pending.number)
            if len(joined) > known:  # a new id (one joined again keeps its place)
                self._joined_order.append(event_id)
            if self.max_pending is not None and len(joined) > self.max_pending:
                del joined[self._joined_order.popleft()]
                # Joined ids are in the order their labels came, not their events: the next
                # front may be due sooner than the one evicted.
                self._lower_horizon(joined[self._joined_order[0]][1])
            return pending
        if event_id in self.joined or event_id in self.parked:
            return DUPLICATE
        return None

    def park_label(
        self, label: Label, number: int, origin: Any = None, size: int = 0
    ) -> list[ParkedLabel]:
        """Keep a label until its event comes; returns labels evicted to stay in bounds
        (``max_pending`` labels, ``max_pending_bytes`` of them; never the one just parked)."""
        if number < self._newest:
            self._unordered = True
            self.horizon = 0
        else:
            self._newest = number
        if not self.parked:
            self._lower_horizon(number)
        parked = self.parked
        parked[label.id] = ParkedLabel(label, number, origin, size)
        self.parked_bytes += size
        evicted: list[ParkedLabel] = []
        max_pending, max_bytes = self.max_pending, self.max_pending_bytes
        while len(parked) > 1 and (
            (max_pending is not None and len(parked) > max_pending)
            or (max_bytes is not None and self.parked_bytes > max_bytes)
        ):
            old = parked.popitem(last=False)[1]
            self.parked_bytes -= old.size
            evicted.append(old)
        return evicted

    def _expired(self, ts: float, number: int, now_ts: float, now_number: int) -> bool:
        if self.ttl_events is not None and now_number - number > self.ttl_events:
            return True
        return self.ttl_seconds is not None and now_ts - ts > self.ttl_seconds

    def expire(self, now_ts: float, now_number: int) -> tuple[list[Pending], list[ParkedLabel]]:
        """Drop what outlived the TTL; returns the unlabelled events and orphan labels.

        Each queue is in arrival order, so only its front is looked at, and not even that
        before ``horizon``. The rule is ``_expired``'s, inlined.
        """
        if now_number < self.horizon:
            return [], []
        # now_number - number > ttl_events, for ints, is number < min_number.
        min_number = now_number - self.ttl_events if self.ttl_events is not None else -1
        ttl_s = self.ttl_seconds if self.ttl_seconds is not None else float("inf")
        events: list[Pending] = []
        if self._due:  # taken from a full buffer at the end of their TTL (see ``add``)
            events.extend(self._due)
            self._due.clear()
        pending = self.pending
        while pending:
            front = pending[next(iter(pending))]
            if front.number >= min_number and not now_ts - front.ts > ttl_s:
                break
            gone = pending.popitem(last=False)[1]
            self.pending_bytes -= gone.size
            events.append(gone)
        labels: list[ParkedLabel] = []
        parked_labels = self.parked
        while parked_labels:
            parked = parked_labels[next(iter(parked_labels))]
            if parked.number >= min_number and not now_ts - parked.label.ts > ttl_s:
                break
            orphan = parked_labels.popitem(last=False)[1]
            self.parked_bytes -= orphan.size
            labels.append(orphan)
        joined = self.joined
        order = self._joined_order
        while order:
            ts, number = joined[order[0]]
            if number >= min_number and not now_ts - ts > ttl_s:
                break
            del joined[order.popleft()]
        self._set_horizon()
        return events, labels

    def _set_horizon(self) -> None:
        """The earliest event count at which a front can expire, from the fronts as they are."""
        if self.ttl_seconds is not None or self._unordered:
            self.horizon = 0
            return
        if self.ttl_events is None:
            self.horizon = _NEVER
            return
        first = _NEVER
        if self.pending:
            first = self.pending[next(iter(self.pending))].number
        if self.parked:
            first = min(first, self.parked[next(iter(self.parked))].number)
        if self.joined:
            first = min(first, self.joined[self._joined_order[0]][1])
        self.horizon = first + self.ttl_events + 1 if first < _NEVER else _NEVER
