"""What would have happened: several configs over the same history, in-process.

``riverline compare`` runs each config's learning core over the records a replay would publish,
read back in the order the consumer's merge gives them (no broker, no Redis), so a run here
equals ``replay`` then ``run`` of that config, field for field, and costs only the core.

- :func:`~pipeline.compare_order.consumer_order` is the consumer's merge over a replay's
  records (each encoded as the replay sends it, parsed as the consumer does).
- :func:`simulate` feeds one core that order and returns its report (``riverline report``'s
  shape), with the CPU time it took; :func:`simulate_many` feeds several cores one reading of
  the history, so a comparison costs the cores plus one merge, not one merge per config.
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from pipeline.compare_order import Item, answer_item, consumer_order, history_key
from pipeline.config import RiverlineConfig
from pipeline.core import LearningCore
from pipeline.schemas import Event, InvalidRecord, Label, ReviewRequest
from pipeline.schemas import encode as encode_wire
from pipeline.validation import Validator
from producers.schedule import LabelDelay
from producers.sources import SourceRecord

__all__ = [
    "Grid",
    "Setting",
    "charge",
    "consumer_order",
    "expand",
    "merged_chunks",
    "parse_setting",
    "simulate",
    "simulate_many",
    "summary_row",
]

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


# -- runs ----------------------------------------------------------------------------------

CHUNK = 512
"""Records parsed and merged at a time, then fed to each core in turn: the history is read once
for every config that shares it, and a core runs a stretch of records on its own (alternating
the merge's code and a core's record by record cost ~15% more CPU here, caches shared)."""


class _Run:
    """One config's core over the shared order, with its own reviewer's answers merged in."""

    def __init__(
        self,
        core: LearningCore,
        validator: Validator,
        answer: Callable[[ReviewRequest], Label | None] | None,
    ) -> None:
        self.core = core
        self.validator = validator
        self.answer = answer
        self.answers: list[Item] = []  # a heap by merge key, as ConsumerOrder keeps them
        self.records = self.answered = 0
        self.cpu = self.wall = 0.0

    def feed(self, chunk: list[Item]) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        if self.answer is None:
            # The common case, as tight as a bare loop over the core: no answer can come.
            on_event, on_label = self.core.on_event, self.core.on_label
            dead_letters = self.core.state.dead_letters
            for item in chunk:
                parsed = item.parsed
                if type(parsed) is Event:
                    on_event(parsed)
                elif type(parsed) is Label:
                    on_label(parsed)
                else:
                    dead_letters[parsed.reason] += 1  # what the consumer dead-letters, alike
            self.records += len(chunk)
        else:
            answers, one, pop = self.answers, self._one, heapq.heappop
            for item in chunk:
                # An answer due before this record is read first, as ConsumerOrder merges them.
                while answers and answers[0].key < item.key:
                    one(pop(answers))
                one(item)
        self.cpu += time.process_time() - cpu
        self.wall += time.perf_counter() - wall

    def finish(self) -> None:
        """The answers still due after the last record (an answer's label may ask again)."""
        wall, cpu = time.perf_counter(), time.process_time()
        while self.answers:
            self._one(heapq.heappop(self.answers))
        self.cpu += time.process_time() - cpu
        self.wall += time.perf_counter() - wall

    def _one(self, item: Item) -> None:
        self.records += 1
        parsed = item.parsed
        if type(parsed) is Event:
            outcome = self.core.on_event(parsed)
        elif type(parsed) is Label:
            outcome = self.core.on_label(parsed)
        else:
            self.core.state.dead_letters[parsed.reason] += 1
            return
        if self.answer is None or not outcome.review:
            return
        for output in outcome.review:
            request = output.record
            if isinstance(request, ReviewRequest):
                label = self.answer(request)
                if label is not None:
                    self.answered += 1
                    # Through the consumer's parser, as the reviewer's bytes would go.
                    try:
                        parsed_answer: Label | InvalidRecord = self.validator.label(
                            encode_wire(label)
                        )
                    except InvalidRecord as e:
                        parsed_answer = e
                    heapq.heappush(self.answers, answer_item("label", parsed_answer))

    def report(self) -> dict[str, Any]:
        report = self.core.report()
        events = report["events"]
        report["checkpoint_version"] = None  # nothing is checkpointed in-process
        report["run"] = {
            "role": "compare",
            "records": self.records,
            "reviewer_answers": self.answered,
            "seconds": round(self.wall, 3),
            "cpu_seconds": round(self.cpu, 3),
            "cpu_us_per_event": round(self.cpu / events * 1e6, 1) if events else None,
            "events_per_second": round(events / self.wall) if self.wall > 0 else None,
        }
        return report


def merged_chunks(
    config: RiverlineConfig,
    records: Iterable[SourceRecord],
    delay: LabelDelay | None,
    validator: Validator,
    interval: float = 1.0,
) -> Iterator[list[Item]]:
    """The consumer's order of a replay of ``records`` (:func:`consumer_order`), a stretch of
    :data:`CHUNK` records at a time: what :func:`simulate_many` feeds its cores."""
    order = iter(consumer_order(config, records, delay, validator, interval))
    while chunk := list(itertools.islice(order, CHUNK)):
        yield chunk


def simulate_many(
    configs: Sequence[RiverlineConfig],
    records: Iterable[SourceRecord],
    delay: LabelDelay | None,
    *,
    answer: Callable[[ReviewRequest], Label | None] | None = None,
    interval: float = 1.0,
    cores: Sequence[LearningCore] | None = None,
    chunks: Iterable[list[Item]] | None = None,
) -> list[dict[str, Any]]:
    """:func:`simulate` for several configs over one reading of ``records``: each stretch of
    the replay is parsed and merged once, then fed to every core in turn. Each report is the
    one :func:`simulate` gives for its config alone; its ``run`` CPU and wall time are its
    core's own plus an even share of reading and merging. The configs must share a
    :func:`~pipeline.compare_order.history_key` (ValueError otherwise). The cores share the
    parsed records (frozen), as River's own loop hands one ``x`` to predict and learn: a model
    that changed its input in place would be wrong there already.

    ``chunks``: the :func:`merged_chunks` of ``records`` made elsewhere (another process reads
    the history: :mod:`pipeline.cli.compare_jobs`); ``records`` is then not read.

    >>> from producers.sources import open_source, SourceOptions
    >>> from pipeline.config import load_config
    >>> a = load_config(None, {"name": "a"}, environ={})
    >>> b = load_config(None, {"name": "b", "model": {"spec": "naive_bayes.GaussianNB"}},
    ...                 environ={})
    >>> rows = list(open_source("river:Phishing", SourceOptions(limit=300)))
    >>> both = simulate_many([a, b], rows, LabelDelay(events=10))
    >>> alone = simulate(b, rows, LabelDelay(events=10))
    >>> both[1]["metrics"] == alone["metrics"] != both[0]["metrics"]
    True
    """
    cores = list(cores) if cores is not None else [LearningCore.from_config(c) for c in configs]
    if len(cores) != len(configs):
        raise ValueError(f"{len(configs)} configs but {len(cores)} cores")
    if not configs:
        return []
    keys = {history_key(c, not core.classifier) for c, core in zip(configs, cores, strict=True)}
    if len(keys) > 1:
        raise ValueError("configs with different partitions, validation or label types")
    runs = [
        _Run(core, Validator(c.validation, regression=not core.classifier), answer)
        for c, core in zip(configs, cores, strict=True)
    ]
    if chunks is None:
        chunks = merged_chunks(configs[0], records, delay, runs[0].validator, interval)
    stretches = iter(chunks)
    share = 1 / len(runs)
    while True:
        wall, cpu = time.perf_counter(), time.process_time()
        chunk = next(stretches, None)
        cpu, wall = (time.process_time() - cpu) * share, (time.perf_counter() - wall) * share
        for run in runs:
            run.cpu += cpu
            run.wall += wall
        if chunk is None:
            break
        for run in runs:
            run.feed(chunk)
    for run in runs:
        run.finish()
    return [run.report() for run in runs]


def charge(report: dict[str, Any], cpu_seconds: float) -> None:
    """Add CPU time spent for this run in another process (its share of the reading, when a
    process of its own read the history) to the report's ``run`` figures."""
    run = report["run"]
    run["cpu_seconds"] = round(run["cpu_seconds"] + cpu_seconds, 3)
    events = report["events"]
    run["cpu_us_per_event"] = round(run["cpu_seconds"] / events * 1e6, 1) if events else None


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
    cores = [core] if core is not None else None
    return simulate_many([config], records, delay, answer=answer, interval=interval, cores=cores)[0]


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
