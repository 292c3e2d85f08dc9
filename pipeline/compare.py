"""What would have happened: several configs over the same history, in-process.

``riverline compare`` runs each config's learning core over the records a replay would publish,
read back in the order the consumer's merge gives them (no broker, no Redis), so a run here
equals ``replay`` then ``run`` of that config, field for field, and costs only the core.

- :func:`consumer_order` is the consumer's merge over a replay's records: each record encoded
  as the replay sends it and parsed as the consumer does (an invalid one is dead-lettered the
  same way), spread over the configured partitions by key, then merged by
  ``(ts, label before event, seq)``.
- :func:`simulate` feeds one core that order and returns its report (``riverline report``'s
  shape), with the CPU time it took.
- :func:`expand` turns ``--set key=A,B`` settings into the grid of configs, named by what
  differs; :func:`summary_row` is one line of the comparison table.

>>> from producers.schedule import LabelDelay
>>> from producers.sources import open_source, SourceOptions
>>> from pipeline.config import load_config
>>> config = load_config(None, {"name": "doctest", "evaluation": {"metric": "Accuracy"}})
>>> records = open_source("river:Phishing", SourceOptions(limit=200))
>>> report = simulate(config, records, LabelDelay(events=10))
>>> report["events"], report["labels"], round(report["metrics"]["model"]["Accuracy"], 3)
(200, 200, 0.79)
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from pipeline.config import RiverlineConfig
from pipeline.core import LearningCore
from pipeline.kafka.transport import stable_partition
from pipeline.ordering import EVENT_RANK, LABEL_RANK, SortKey
from pipeline.schemas import Event, InvalidRecord, Label, ReviewRequest
from pipeline.schemas import encode as encode_wire
from pipeline.validation import Validator
from producers.replay import encode, event_payload, label_payload
from producers.schedule import LabelDelay, schedule
from producers.sources import SourceRecord

__all__ = [
    "Grid",
    "Setting",
    "consumer_order",
    "expand",
    "parse_setting",
    "simulate",
    "summary_row",
]

_INVALID_TS = float("-inf")  # an invalid record goes first in its partition, as in the consumer

# -- the grid ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One ``--set key=value[,value...]``: a dotted config key and the values to try."""

    key: str
    values: tuple[Any, ...]


def split_values(text: str) -> list[str]:
    """Split on the commas outside brackets and quotes: a model spec keeps its parameters.

    >>> split_values("tree.HoeffdingTreeClassifier(grace_period=50, delta=1e-5),dummy.Dummy")
    ['tree.HoeffdingTreeClassifier(grace_period=50, delta=1e-5)', 'dummy.Dummy']
    >>> split_values("0.01, 0.05")
    ['0.01', '0.05']
    """
    parts: list[str] = []
    depth, quote, start = 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def parse_setting(text: str) -> Setting:
    """``gating.margin=0.01,0.05`` -> the key and its values, read as YAML scalars.

    >>> parse_setting("gating.margin=0.01,0.05")
    Setting(key='gating.margin', values=(0.01, 0.05))
    >>> parse_setting("model.spec=linear_model.LogisticRegression(l2=0.1)").values
    ('linear_model.LogisticRegression(l2=0.1)',)
    >>> parse_setting("evaluation.extra_metrics=[F1, Accuracy],[]").values
    (['F1', 'Accuracy'], [])
    >>> parse_setting("margin")
    Traceback (most recent call last):
    ...
    ValueError: 'margin': expected key=value[,value...], e.g. gating.margin=0.01,0.05
    """
    key, eq, raw = text.partition("=")
    key = key.strip()
    if not eq or not key or not raw.strip():
        raise ValueError(f"{text!r}: expected key=value[,value...], e.g. gating.margin=0.01,0.05")
    if not all(part.isidentifier() for part in key.split(".")):
        raise ValueError(f"{text!r}: {key!r} is not a dotted config key such as gating.margin")
    values = []
    for part in split_values(raw):
        if not part:
            raise ValueError(f"{text!r}: an empty value")
        try:
            value = yaml.safe_load(part)
        except yaml.YAMLError:
            value = part  # not YAML: taken as the string it is
        values.append(value)
    return Setting(key, tuple(values))


def nested(key: str, value: Any) -> dict[str, Any]:
    """``nested("gating.margin", 0.1)`` -> ``{"gating": {"margin": 0.1}}``."""
    out: dict[str, Any] = {}
    target = out
    *parents, last = key.split(".")
    for part in parents:
        target[part] = target = {}
    target[last] = value
    return out


@dataclass(frozen=True)
class Grid:
    """One combination: its name (what differs), and the overrides that make it."""

    name: str
    path: str
    settings: dict[str, Any] = field(default_factory=dict)

    def overrides(self) -> dict[str, Any]:
        from pipeline.config import _deep_merge

        merged: dict[str, Any] = {}
        for key, value in self.settings.items():
            merged = _deep_merge(merged, nested(key, value))
        return merged


def _show(value: Any) -> str:
    return (
        "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    )


def expand(paths: list[str], settings: list[Setting]) -> list[Grid]:
    """Every config file crossed with every combination of the settings, in the order given,
    each named by what differs between them (the file's stem, the settings with 2+ values).

    >>> grid = expand(["configs/demo.yaml"], [
    ...     Setting("model.spec", ("A", "B")), Setting("gating.margin", (0.01, 0.05)),
    ...     Setting("gating.window", (100,))])
    >>> [g.name for g in grid]
    ['model.spec=A gating.margin=0.01', 'model.spec=A gating.margin=0.05', \
'model.spec=B gating.margin=0.01', 'model.spec=B gating.margin=0.05']
    >>> grid[1].overrides()
    {'model': {'spec': 'A'}, 'gating': {'margin': 0.05, 'window': 100}}
    >>> [g.name for g in expand(["a/demo.yaml", "b/demo.yaml", "drift.yaml"], [])]
    ['a/demo.yaml', 'b/demo.yaml', 'drift']
    """
    keys = [s.key for s in settings]
    if len(set(keys)) != len(keys):
        raise ValueError("each key may be --set once; give its values as a comma-separated list")
    stems = [path.rsplit("/", 1)[-1].rsplit(".", 1)[0] for path in paths]
    # A stem shared by two files does not tell them apart: those are named by their path.
    labels = [
        path if stems.count(stem) > 1 else stem for path, stem in zip(paths, stems, strict=True)
    ]
    varied = [s.key for s in settings if len(s.values) > 1]
    grids: list[Grid] = []
    for path, label in zip(paths, labels, strict=True):
        for combination in itertools.product(*(s.values for s in settings)):
            chosen = dict(zip(keys, combination, strict=True))
            parts = [label] if len(paths) > 1 else []
            parts += [f"{key}={_show(chosen[key])}" for key in varied]
            grids.append(Grid(" ".join(parts) or label, path, chosen))
    names = [g.name for g in grids]
    return [
        Grid(f"{g.name} #{i + 1}", g.path, g.settings) if names.count(g.name) > 1 else g
        for i, g in enumerate(grids)
    ]


# -- the consumer's order, without the broker -----------------------------------------------


class _Item:
    """A record in a partition: its merge key, and what the consumer parsed from it."""

    __slots__ = ("key", "kind", "parsed")

    def __init__(self, key: SortKey, kind: str, parsed: Any) -> None:
        self.key = key
        self.kind = kind
        self.parsed = parsed

    def __lt__(self, other: _Item) -> bool:
        return self.key < other.key


class ConsumerOrder:
    """The records of a replay in the order ``run`` reads them back from a broker holding them
    all: per partition in offset order, across partitions the smallest key first, a partition
    waited for while the source may still add to it (:mod:`pipeline.ordering`).

    ``answer`` adds a reviewer's answer, read at its own event time (with no ``seq``, as a
    person's answer arrives): what a paced replay approximates, exactly.
    """

    def __init__(
        self,
        items: Iterable[tuple[Hashable, _Item]],
        streams: Iterable[Hashable],
    ) -> None:
        self.source = iter(items)
        self.queues: dict[Hashable, deque[_Item]] = {s: deque() for s in streams}
        self.empty = len(self.queues)  # streams with nothing buffered
        self.exhausted = False
        self.answers: list[_Item] = []

    def answer(self, kind: str, parsed: Any) -> None:
        ts = parsed.ts if not isinstance(parsed, InvalidRecord) else _INVALID_TS
        heapq.heappush(self.answers, _Item((ts, LABEL_RANK, -1), kind, parsed))

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

    def __iter__(self) -> Iterator[_Item]:
        # Per record: the smallest head among a few partitions (names looked up once).
        queues = list(self.queues.values())
        answers, pop, fill = self.answers, heapq.heappop, self._fill
        while True:
            if self.empty:
                fill()
            head: deque[_Item] | None = None
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
) -> Iterator[tuple[Hashable, _Item]]:
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
            yield (kind, stable_partition(key, partitions)), _Item((ts, rank, seq), kind, parsed)
        else:
            yield (kind, 0), _Item((ts, rank, seq), kind, parsed)


# -- one run -------------------------------------------------------------------------------


def simulate(
    config: RiverlineConfig,
    records: Iterable[SourceRecord],
    delay: LabelDelay | None,
    *,
    answer: Callable[[ReviewRequest], Label | None] | None = None,
    interval: float = 1.0,
    core: LearningCore | None = None,
) -> dict[str, Any]:
    """Run ``config``'s learning core over a replay of ``records``; its report, plus ``run``
    (CPU and wall time) as ``run --report`` has it. ``answer`` plays the reviewer: each review
    request's answer (if any) is read back at its own event time, like a person's label.
    ``core``: the core to run (to look into afterwards); by default a fresh one for ``config``.
    """
    core = core if core is not None else LearningCore.from_config(config)
    validator = Validator(config.validation, regression=not core.classifier)
    order = consumer_order(config, records, delay, validator, interval)
    dead_letters = core.state.dead_letters
    on_event, on_label = core.on_event, core.on_label
    answered = 0
    wall, cpu = time.perf_counter(), time.process_time()
    records_read = 0
    for item in order:
        records_read += 1
        parsed = item.parsed
        if type(parsed) is Event:
            outcome = on_event(parsed)
        elif type(parsed) is Label:
            outcome = on_label(parsed)
        else:
            dead_letters[parsed.reason] += 1  # what the consumer dead-letters, counted alike
            continue
        if answer is not None and outcome.review:
            for output in outcome.review:
                request = output.record
                if isinstance(request, ReviewRequest):
                    label = answer(request)
                    if label is not None:
                        answered += 1
                        # Through the consumer's parser, as the reviewer's bytes would go.
                        try:
                            order.answer("label", validator.label(encode_wire(label)))
                        except InvalidRecord as e:
                            order.answer("label", e)
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    report = core.report()
    events = report["events"]
    report["checkpoint_version"] = None  # nothing is checkpointed in-process
    report["run"] = {
        "role": "compare",
        "records": records_read,
        "reviewer_answers": answered,
        "seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "cpu_us_per_event": round(cpu / events * 1e6, 1) if events else None,
        "events_per_second": round(events / wall) if wall > 0 else None,
    }
    return report


# -- the table -----------------------------------------------------------------------------


def _metric(report: dict[str, Any], role: str) -> float | None:
    value = report.get("metrics", {}).get(role, {}).get(report.get("metric", ""))
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def summary_row(name: str, report: dict[str, Any]) -> dict[str, Any]:
    """The comparison table's line for one run: its metrics (the gating metric), decisions,
    share served by the model, people asked, slice gap and CPU per event.

    >>> row = summary_row("a", {"metric": "Accuracy", "events": 4, "labels": 4,
    ...     "metrics": {"model": {"Accuracy": 0.75}, "fallback": {"Accuracy": 0.5},
    ...                 "served": {"Accuracy": 0.5}},
    ...     "predictions_by_source": {"model": 1, "default": 3}, "promotions": [{}],
    ...     "demotions": [], "review": {"sent": 2, "answered": 1}, "slices": {},
    ...     "run": {"cpu_us_per_event": 12.5}})
    >>> row["model"], row["model_share"], row["asked"], row["answered"], row["slice_gap"]
    (0.75, 0.25, 2, 1, None)
    """
    served = report.get("predictions_by_source", {})
    total = sum(served.values())
    review = report.get("review") or {}
    slices = report.get("slices") or {}
    gap = slices.get("gap", {}).get("served") if slices else None
    return {
        "name": name,
        "spec": report.get("compare", {}).get("model", ""),
        "metric": report.get("metric"),
        "model": _metric(report, "model"),
        "fallback": _metric(report, "fallback"),
        "served": _metric(report, "served"),
        "promotions": len(report.get("promotions", [])),
        "demotions": len(report.get("demotions", [])),
        "model_share": served.get("model", 0) / total if total else 0.0,
        "asked": int(review.get("sent", 0)),
        "answered": int(review.get("answered", 0)),
        "slice_gap": gap,
        "cpu_us_per_event": report.get("run", {}).get("cpu_us_per_event"),
        # Challengers: who is champion at the end, after how many takeovers.
        "champion": (board := report.get("challengers") or {})
        .get("leaderboard", [{}])[0]
        .get("name"),
        "takeovers": len(board.get("promotions", [])),
    }
