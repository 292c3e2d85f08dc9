"""Synthetic streams with a concept drift at a known position, from ``river.datasets.synth``.

A spec reads ``synth:<Generator>`` or ``synth:<Generator>:key=value,key=value`` (the ``synth:``
prefix is optional here, :func:`producers.sources.open_source` needs it). The generators are
those of :data:`SYNTH_GENERATORS`, the keys:

* ``seed`` (int, 42): seeds the stream before the drift; ``seed + 1`` the one after it.
* ``n`` (int, 10000): how many records.
* ``drift_at`` (int, ``n // 2``): the record index around which the concept changes.
* ``width`` (int, 1): how many records the change takes; 1 is abrupt.
* ``before``, ``after`` (int): the concept before and after the drift, SEA's ``variant`` (0..3,
  default 0 then 3) or Agrawal's ``classification_function`` (0..9, default 0 then 4).
* ``noise`` (float, 0.0, SEA only): the probability that a label is flipped.

Knowing where the drift is lets a demo check that a model is demoted after it and promoted
again once a challenger has learned the new concept.

>>> records = list(open_synth("synth:SEA:n=3", SourceOptions()))
>>> [(r.id, r.ts, list(r.features), r.label) for r in records]
[('0', 1700000000.0, ['x0', 'x1', 'x2'], False), ('1', 1700000001.0, ['x0', 'x1', 'x2'], False),
 ('2', 1700000002.0, ['x0', 'x1', 'x2'], True)]
>>> drift_position("SEA:n=300")
150

"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import count
from types import MappingProxyType
from typing import Any

from river.datasets import synth

from producers.sources import SourceError, SourceOptions, SourceRecord

__all__ = ["SYNTH_GENERATORS", "SynthGenerator", "drift_position", "open_synth"]

_INT = re.compile(r"[+-]?\d+", re.ASCII)
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?", re.ASCII | re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class SynthGenerator:
    """A River generator and the parameter that picks its concept.

    >>> SYNTH_GENERATORS["SEA"].concepts, SYNTH_GENERATORS["Agrawal"].variant
    (range(0, 4), 'classification_function')
    """

    factory: Any
    variant: str
    concepts: range
    before: int
    after: int
    noisy: bool = False


SYNTH_GENERATORS: Mapping[str, SynthGenerator] = MappingProxyType(
    {
        "SEA": SynthGenerator(synth.SEA, "variant", range(4), before=0, after=3, noisy=True),
        "Agrawal": SynthGenerator(
            synth.Agrawal, "classification_function", range(10), before=0, after=4
        ),
    }
)

_FORM = (
    "use synth:<Generator>[:key=value,...] with Generator one of "
    f"{', '.join(SYNTH_GENERATORS)} and keys seed, n, drift_at, width, before, after "
    "(integers) and, for SEA, noise (a probability)"
)
_INT_KEYS = ("seed", "n", "drift_at", "width", "before", "after")


@dataclass(frozen=True, slots=True)
class _Spec:
    name: str
    generator: SynthGenerator
    seed: int
    n: int
    drift_at: int
    width: int
    before: int
    after: int
    noise: float


def _parse(spec: str) -> _Spec:
    text = spec.removeprefix("synth:")
    name, has_params, params = text.partition(":")
    generator = SYNTH_GENERATORS.get(name)
    if generator is None:
        raise SourceError(f"synth: unknown generator {name!r}: {_FORM}")
    values: dict[str, int | float] = {}
    for item in params.split(",") if has_params else ():
        key, has_value, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not has_value or not key:
            raise SourceError(f"synth:{name}: {item!r} is not key=value: {_FORM}")
        if key in values:
            raise SourceError(f"synth:{name}: {key!r} is given twice: {_FORM}")
        if key in _INT_KEYS:
            # Stricter than int(), which also takes "1_000" and non-ASCII digits.
            if not _INT.fullmatch(raw):
                raise SourceError(f"synth:{name}: {key}={raw!r} is not an integer: {_FORM}")
            values[key] = int(raw)
        elif key == "noise" and generator.noisy:
            if not _FLOAT.fullmatch(raw) or not 0.0 <= float(raw) <= 1.0:
                raise SourceError(f"synth:{name}: noise={raw!r} is not a number in [0, 1]")
            values[key] = float(raw)
        else:
            raise SourceError(f"synth:{name}: unknown key {key!r}: {_FORM}")
    n = int(values.get("n", 10_000))
    drift_at = int(values.get("drift_at", n // 2))
    width = int(values.get("width", 1))
    if n < 0:
        raise SourceError(f"synth:{name}: n={n} is negative")
    if not 0 <= drift_at <= n:
        raise SourceError(f"synth:{name}: drift_at={drift_at} is not between 0 and n={n}")
    if width < 1:
        raise SourceError(f"synth:{name}: width={width} must be at least 1 (1 is abrupt)")
    concepts = {k: int(values.get(k, getattr(generator, k))) for k in ("before", "after")}
    for key, concept in concepts.items():
        if concept not in generator.concepts:
            first, last = generator.concepts[0], generator.concepts[-1]
            raise SourceError(
                f"synth:{name}: {key}={concept} is not a {name} {generator.variant} "
                f"({first}..{last})"
            )
    return _Spec(
        name,
        generator,
        seed=int(values.get("seed", 42)),
        n=n,
        drift_at=drift_at,
        width=width,
        noise=float(values.get("noise", 0.0)),
        **concepts,
    )


def drift_position(spec: str) -> int:
    """The record index around which the concept of ``spec`` changes (``synth:`` optional).

    >>> drift_position("synth:Agrawal"), drift_position("SEA:n=100,drift_at=30")
    (5000, 30)
    """
    return _parse(spec).drift_at


class _DriftStream(synth.ConceptDriftStream):
    """River's ConceptDriftStream with an overflow-free sigmoid.

    River computes ``1 / (1 + exp(v))`` with ``v = -4 * (i - position) / width``, and
    ``math.exp`` overflows once ``v > 709``, e.g. from the first record with ``width=1`` and
    ``position=5000``. Capping ``v`` changes no draw: the probability it stands for is already
    below the smallest non-zero ``random()``, so records match River's wherever River works.
    """

    def __iter__(self) -> Iterator[tuple[dict[Any, Any], Any]]:
        rng = random.Random(self.seed)
        before, after = iter(self.stream), iter(self.drift_stream)
        for index in count(1):  # River counts from 1
            v = min(-4.0 * float(index - self.position) / float(self.width), 700.0)
            try:
                pair = next(after if rng.random() <= 1.0 / (1.0 + math.exp(v)) else before)
            except StopIteration:
                return
            yield pair


def open_synth(spec: str, options: SourceOptions) -> Iterator[SourceRecord]:
    """Records of ``[synth:]<Generator>[:key=value,...]``; a bad spec raises here, not later.

    SEA's integer feature keys become ``"x0"``, ``"x1"``, ``"x2"``, since riverline's wire
    format wants text keys; Agrawal's are kept. Values and labels keep their River types.

    >>> options = SourceOptions(limit=2)
    >>> [(r.id, r.label, sorted(r.features)[:2]) for r in open_synth("Agrawal:seed=1", options)]
    [('0', 1, ['age', 'car']), ('1', 0, ['age', 'car'])]

    >>> try:
    ...     open_synth("synth:SEA:before=7", options)
    ... except SourceError as e:
    ...     print(e)
    synth:SEA: before=7 is not a SEA variant (0..3)
    """
    s = _parse(spec)
    if options.limit is not None and options.limit < 0:
        raise SourceError(f"limit must be at least 0, not {options.limit}")
    extra: dict[str, float] = {"noise": s.noise} if s.generator.noisy else {}
    stream = _DriftStream(
        stream=s.generator.factory(seed=s.seed, **{s.generator.variant: s.before}, **extra),
        drift_stream=s.generator.factory(
            seed=s.seed + 1, **{s.generator.variant: s.after}, **extra
        ),
        position=s.drift_at,
        width=s.width,
        seed=s.seed,
    )
    n = s.n if options.limit is None else min(s.n, options.limit)
    return _records(stream.take(n), options)


def _records(
    pairs: Iterator[tuple[dict[Any, Any], Any]], options: SourceOptions
) -> Iterator[SourceRecord]:
    for i, (x, y) in enumerate(pairs):
        features = {k if isinstance(k, str) else f"x{k}": v for k, v in x.items()}
        yield SourceRecord(str(i), options.start + i * options.interval, features, y)
