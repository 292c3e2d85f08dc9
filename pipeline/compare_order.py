"""The records of a replay in the order ``run`` reads them back, without the broker.

:func:`consumer_order` is the consumer's merge over a replay's records: each record encoded as
the replay sends it and parsed as the consumer does (an invalid one is dead-lettered the same
way), spread over the configured partitions by key, then merged by
``(ts, label before event, seq)``. It depends on a config only through :func:`history_key`:
configs that share one can share one order (:func:`pipeline.compare.simulate_many`).
"""

from __future__ import annotations

import heapq
import marshal
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any

from pipeline.config import RiverlineConfig
from pipeline.kafka.transport import stable_partition
from pipeline.ordering import EVENT_RANK, LABEL_RANK, SortKey
from pipeline.schemas import Event, InvalidRecord, Label, rebuilt
from pipeline.validation import Validator
from producers.replay import encode, event_payload, label_payload
from producers.schedule import LabelDelay, schedule
from producers.sources import SourceRecord

__all__ = [
    "ConsumerOrder",
    "Item",
    "answer_item",
    "consumer_order",
    "history_key",
    "pack_items",
    "unpack_items",
]

_INVALID_TS = float("-inf")  # an invalid record goes first in its partition, as in the consumer


def history_key(config: RiverlineConfig, regression: bool) -> tuple[int, str, bool]:
    """What of a config the order depends on: the partitions (the merge), the validation
    limits and whether labels are numbers (what is dead-lettered). Two configs with the same
    key get the same records in the same order, the same parsed objects.

    >>> from pipeline.config import load_config
    >>> a = load_config(None, {"model": {"spec": "dummy.NoChangeClassifier"}}, environ={})
    >>> b = load_config(None, {"kafka": {"partitions": 2}}, environ={})
    >>> history_key(a, False) == history_key(load_config(None, {}, environ={}), False)
    True
    >>> history_key(a, False) == history_key(b, False)
    False
    """
    return config.kafka.partitions, config.validation.model_dump_json(), regression


class Item:
    """A record in a partition: its merge key, and what the consumer parsed from it."""

    __slots__ = ("key", "kind", "parsed")

    def __init__(self, key: SortKey, kind: str, parsed: Any) -> None:
        self.key = key
        self.kind = kind
        self.parsed = parsed

    def __lt__(self, other: Item) -> bool:
        return self.key < other.key


def answer_item(kind: str, parsed: Any) -> Item:
    """A reviewer's answer (or its dead letter) as the merge sees it: at its own event time,
    with no ``seq``, so ahead of a replayed record at the same time."""
    ts = parsed.ts if not isinstance(parsed, InvalidRecord) else _INVALID_TS
    return Item((ts, LABEL_RANK, -1), kind, parsed)


class ConsumerOrder:
    """The records of a replay in the order ``run`` reads them back from a broker holding them
    all: per partition in offset order, across partitions the smallest key first, a partition
    waited for while the source may still add to it (:mod:`pipeline.ordering`).

    ``answer`` adds a reviewer's answer, read at its own event time (with no ``seq``, as a
    person's answer arrives): what a paced replay approximates, exactly.
    """

    def __init__(
        self,
        items: Iterable[tuple[Hashable, Item]],
        streams: Iterable[Hashable],
    ) -> None:
        self.source = iter(items)
        self.queues: dict[Hashable, deque[Item]] = {s: deque() for s in streams}
        self.empty = len(self.queues)  # streams with nothing buffered
        self.exhausted = False
        self.answers: list[Item] = []

    def answer(self, kind: str, parsed: Any) -> None:
        heapq.heappush(self.answers, answer_item(kind, parsed))

    def _fill(self) -> None:
        # Read on until every partition has a record (or the source ends): only then is the
        # smallest head known to be the smallest record, as the consumer waits for lag.
        queues, source = self.queues, self.source
        while self.empty and not self.exhausted:
            try:
                stream, item = next(source)
            except StopIteration:
                self.exhausted = True
                return
            queue = queues[stream]
            if not queue:
                self.empty -= 1
            queue.append(item)

    def __iter__(self) -> Iterator[Item]:
        # Per record: the smallest head among a few partitions (names looked up once).
        queues = list(self.queues.values())
        answers, pop, fill = self.answers, heapq.heappop, self._fill
        while True:
            if self.empty:
                fill()
            head: deque[Item] | None = None
            best: SortKey | None = None
            for queue in queues:
                if queue:
                    key = queue[0].key
                    if best is None or key < best:
                        head, best = queue, key
            if answers and (best is None or answers[0].key < best):
                yield pop(answers)
                continue
            if head is None:
                return
            item = head.popleft()
            if not head:
                self.empty += 1
            yield item


def consumer_order(
    config: RiverlineConfig,
    records: Iterable[SourceRecord],
    delay: LabelDelay | None,
    validator: Validator,
    interval: float = 1.0,
) -> ConsumerOrder:
    """A replay of ``records`` with labels ``delay`` late (None: none), as ``run`` reads it.

    >>> from pipeline.config import load_config, ValidationConfig
    >>> rows = [SourceRecord(str(i), float(i), {"x": 1.0}, True) for i in range(2)]
    >>> rows.append(SourceRecord("bad", 2.0, {"x": float("nan")}, True))
    >>> order = consumer_order(load_config(None, {}), rows, LabelDelay(events=1),
    ...                        Validator(ValidationConfig(), regression=False))
    >>> [(i.kind, getattr(i.parsed, "id", None) or i.parsed.reason) for i in order]
    [('event', '0'), ('label', '0'), ('event', '1'), ('event', 'not_finite'), \
('label', '1'), ('label', 'bad')]
    """
    kafka = config.kafka
    partitions = kafka.partitions
    topics = ("event", "label")
    streams = [(t, p) for t in topics for p in range(partitions)]
    if delay is None:
        streams = streams[:partitions]  # no labels topic records: nothing to wait for
    emissions = schedule(records, delay or LabelDelay(events=0), interval)
    return ConsumerOrder(_items(emissions, validator, partitions, delay is not None), streams)


def _items(
    emissions: Iterable[Any], validator: Validator, partitions: int, labels: bool
) -> Iterator[tuple[Hashable, Item]]:
    parse: Callable[[bytes | None], Event | Label]
    parse_event, parse_label = validator.event, validator.label
    for emission in emissions:
        kind, record, ts, seq = emission
        if kind == "event":
            raw, parse, rank = encode(event_payload(record)), parse_event, EVENT_RANK
        elif labels:
            raw, parse, rank = encode(label_payload(record, ts)), parse_label, LABEL_RANK
        else:
            continue
        parsed: Any
        try:
            parsed = parse(raw)
            ts = parsed.__dict__["ts"]
        except InvalidRecord as e:
            parsed, ts = e, _INVALID_TS
        if partitions > 1:
            key = (record.key if record.key is not None else record.id).encode()
            yield (kind, stable_partition(key, partitions)), Item((ts, rank, seq), kind, parsed)
        else:
            yield (kind, 0), Item((ts, rank, seq), kind, parsed)


_EVENT, _LABEL, _INVALID = 0, 1, 2


def pack_items(items: list[Item]) -> bytes:
    """Items as bytes for another process: their keys, and each parsed record's fields as the
    checks left them (an invalid one's reason and message). ``marshal`` keeps every value a
    record can hold as it was (any int, -0.0, a lone surrogate), and is the fastest there is
    for plain values; it is only ever read back by the same Python (:func:`unpack_items`).

    >>> event = Event(id="1", ts=3.0, features={"x": -0.0, "s": "\\ud800", "n": 2**70})
    >>> bad = InvalidRecord("not_json", "the value is not JSON")
    >>> items = [Item((3.0, 1, 0), "event", event), Item((float("-inf"), 0, 1), "label", bad)]
    >>> back = unpack_items(pack_items(items))
    >>> back[0].parsed == event and back[0].parsed.features["x"].hex() == "-0x0.0p+0"
    True
    >>> back[1].key, back[1].kind, back[1].parsed.reason, str(back[1].parsed)
    ((-inf, 0, 1), 'label', 'not_json', 'the value is not JSON')
    """
    rows: list[tuple[Any, ...]] = []
    for item in items:
        parsed = item.parsed
        kind = type(parsed)
        if kind is Event or kind is Label:
            code = _EVENT if kind is Event else _LABEL
            rows.append((item.key, item.kind, code, parsed.__dict__, parsed.model_fields_set))
        else:
            rows.append((item.key, item.kind, _INVALID, parsed.reason, str(parsed)))
    return marshal.dumps(rows)


def unpack_items(data: bytes | memoryview) -> list[Item]:
    """:func:`pack_items`' items again, each record rebuilt as it was parsed (not checked again:
    it was, in the process that packed it)."""
    items = []
    for key, kind, code, first, second in marshal.loads(data):
        if code == _EVENT:
            parsed = rebuilt(Event, first, second)
        elif code == _LABEL:
            parsed = rebuilt(Label, first, second)
        else:
            parsed = InvalidRecord(first, second)
        items.append(Item(key, kind, parsed))
    return items
