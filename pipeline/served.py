"""Split mode: score what the predictors actually published, not what the learner would serve.

A learner does not serve. It predicts every event itself (the model and the fallback stay
prequential, exactly as in ``run``), and reads the predictions topic to learn what was served:
each published prediction is joined by event id with the event awaiting its label, or with a
label that came before the prediction. Whatever the order, each labelled event's served answer
is scored once, from the first copy published (copies of one id are in one partition, so
"first" is its offset order, the same on every read); a label whose prediction never comes
within the bound is counted as unscored.

>>> join = ServedJoin(max_waiting=2)
>>> p = Published("e1", ts=0.0, prediction=True, proba=None, source="rules", model_version=0)
>>> join.answer(p, classes=None)
True
>>> join.wait("e2", y=False, classes=None, attributes={})  # its label came first
[]
>>> join.take_waiting("e2")
(False, None, {})
>>> [join.wait(i, y=True, classes=None, attributes={}) for i in ("a", "b", "c")][-1]
['a']
>>> join.unscored
1
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any, Final, NamedTuple

import orjson

from pipeline.schemas import InvalidRecord, proba_key


class _Unpublished:
    def __repr__(self) -> str:
        return "UNPUBLISHED"

    def __reduce__(self) -> str:
        return "UNPUBLISHED"  # one sentinel, also after a checkpoint round trip


UNPUBLISHED: Final = _Unpublished()


class Published(NamedTuple):
    """The parts of a published prediction the learner scores."""

    id: str
    ts: float
    prediction: Any
    proba: dict[str, float] | None
    source: str
    model_version: int | None


def parse_published(raw: bytes | None) -> Published:
    """A prediction record as the predictors wrote it (riverline's own output, so lenient).

    >>> parse_published(b'{"id": "7", "ts": 1.5, "prediction": true, "source": "model"}').source
    'model'
    >>> try:
    ...     parse_published(b'not json')
    ... except InvalidRecord as e:
    ...     print(e.reason)
    prediction_unreadable
    """
    try:
        data = orjson.loads(raw or b"")
        return Published(
            str(data["id"]),
            float(data["ts"]),
            data.get("prediction"),
            data.get("proba"),
            str(data.get("source", "")),
            data.get("model_version"),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise InvalidRecord("prediction_unreadable", f"not a riverline prediction: {e}") from e


class ServedJoin:
    """Published predictions and labels, joined by id, for the ``served`` role's metrics.

    Labels that came before their prediction wait, at most ``max_waiting`` of them (oldest
    out first, counted in ``unscored``).
    """

    def __init__(self, max_waiting: int = 100_000) -> None:
        self.max_waiting = max_waiting
        # id -> (label value, the model's classes for reading probabilities, attributes)
        self.waiting: OrderedDict[str, tuple[Any, Any, dict[str, Any]]] = OrderedDict()
        # id -> a prediction read before its event (live topics are not ordered across each
        # other: the predictions partition may be fetched before the events one)
        self.early: OrderedDict[str, Published] = OrderedDict()
        self.unscored = 0  # labelled events whose prediction never came
        self.scored = 0
        self.ignored = 0  # duplicates (at-least-once) and predictions of unknown events
        self.by_source: Counter[str] = Counter()
        # The newest version seen serving: a maximum, so it does not depend on the order the
        # predictions partitions were read in (a restarted learner reads them in another).
        self.newest_version: int | None = None

    def answer(self, published: Published, classes: Any) -> Any:
        """The served answer in the form the evaluator scores: the probabilities when the
        model served them (keys back to the model's classes), else the hard prediction."""
        self.by_source[published.source] += 1
        if published.model_version is not None:
            self.newest_version = max(self.newest_version or 0, published.model_version)
        proba = published.proba
        if published.source == "model" and proba and isinstance(classes, dict):
            served = {c: float(proba[k]) for c in classes if (k := proba_key(c)) in proba}
            if served:
                return served
        return published.prediction

    def wait(self, event_id: str, y: Any, classes: Any, attributes: dict[str, Any]) -> list[str]:
        """Keep a scored label until its event's prediction comes; returns ids given up."""
        self.waiting[event_id] = (y, classes, attributes)
        dropped = []
        while len(self.waiting) > self.max_waiting:
            dropped.append(self.waiting.popitem(last=False)[0])
            self.unscored += 1
        return dropped

    def take_waiting(self, event_id: str) -> tuple[Any, Any, dict[str, Any]] | None:
        return self.waiting.pop(event_id, None)

    def keep_early(self, published: Published) -> None:
        """A prediction whose event is not read yet: kept until it is (oldest out first).
        A second copy of it (a predictor's redo after a crash) is ignored: the first copy is
        the one scored, as when the event is read first."""
        if published.id in self.early:
            self.ignored += 1
            return
        self.early[published.id] = published
        while len(self.early) > self.max_waiting:
            self.early.popitem(last=False)
            self.ignored += 1

    def take_early(self, event_id: str) -> Published | None:
        early = self.early
        return early.pop(event_id, None) if early else None

    def report(self) -> dict[str, Any]:
        return {
            "scored": self.scored,
            "waiting_for_prediction": len(self.waiting),
            "unscored_no_prediction": self.unscored + len(self.waiting),
            "ignored": self.ignored,
            "early": len(self.early),
            "published_by_source": dict(sorted(self.by_source.items())),
            "newest_model_version": self.newest_version,
        }
