"""Global feature importance that follows the model as it learns: incremental permutation
feature importance (iPFI, Fumagalli et al., 2023).

On each labelled event (one in ``every``), before the model learns from it, each of the
event's features in turn is replaced by its value in a recent event drawn at random, and the
rise in the model's loss on the label is averaged exponentially (``alpha``) per feature: what
the model relies on now, forgetting what it relied on long ago, so a drift in what it uses
shows. Loss: one minus the probability given to the true class (a classifier), the absolute
error (a regressor).

Written by hand rather than taken from ``ixai`` (whose ``IncrementalPFI`` is the same
estimator): ixai draws from Python's global random state and needs the feature names up
front, while a checkpointed core must give the same state after a replay or a crash redo
(here: seeded by the label's index, state pickled with the core) and a stream may bring new
features at any time. Pure Python, no I/O.

>>> from river import linear_model
>>> model = linear_model.LinearRegression()
>>> importance = Importance(alpha=0.5, window=8, every=1, seed=0)
>>> for i in range(200):
...     x = {"signal": float(i % 7), "noise": float(i % 3)}
...     importance.update(model, x, 2 * x["signal"], False, i)
...     model.learn_one(x, 2 * x["signal"])
>>> top = importance.top(2)
>>> list(top)  # the feature the target is made of comes first
['signal', 'noise']
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any


class Importance:
    """The exponentially averaged loss increase per feature (see the module's doc)."""

    def __init__(
        self, alpha: float, window: int, every: int, seed: int, max_slices: int = 100
    ) -> None:
        self.alpha = alpha
        self.every = every
        self.seed = seed
        self.max_slices = max_slices
        self.recent: deque[dict[str, Any]] = deque(maxlen=window)
        self.values: dict[str, float] = {}
        # The same measure per slice (evaluation.slice_by), so that a group judged on other
        # grounds shows; at most max_slices slices, later ones share "(other)" as the metrics.
        self.by_slice: dict[str, dict[str, float]] = {}
        self.updates = 0

    def update(
        self,
        model: Any,
        x: dict[str, Any],
        y: Any,
        classifier: bool,
        index: int,
        slice_value: str | None = None,
    ) -> None:
        """Fold in one labelled event (``index``: the label's, which seeds the draws), with the
        model as it was before learning from it; the event then joins the recent ones.
        ``slice_value``: the event's slice, whose own measure is updated too."""
        if index % self.every == 0 and self.recent and x:
            rng = random.Random(self.seed * 1_000_003 + index)
            try:
                before = _loss(model, x, y, classifier)
                rises = {}
                for feature in x:
                    donor = rng.choice(self.recent)
                    changed = dict(x)
                    if feature in donor:
                        changed[feature] = donor[feature]
                    else:
                        del changed[feature]
                    rises[feature] = _loss(model, changed, y, classifier) - before
            except Exception:  # a model that cannot answer a changed event: no update
                rises = {}
            if rises:
                self.updates += 1
                _fold(self.values, rises, self.alpha)
                if slice_value is not None:
                    by_slice = self.by_slice
                    if slice_value not in by_slice and len(by_slice) >= self.max_slices:
                        slice_value = "(other)"
                    _fold(by_slice.setdefault(slice_value, {}), rises, self.alpha)
        self.recent.append(x)

    def top(self, k: int | None = None) -> dict[str, float]:
        """The ``k`` most important features (all with None), most important first."""
        return _top(self.values, k)

    def top_by_slice(self, k: int) -> dict[str, dict[str, float]]:
        """Each slice's ``k`` most important features."""
        return {value: _top(values, k) for value, values in sorted(self.by_slice.items())}


def _fold(values: dict[str, float], rises: dict[str, float], alpha: float) -> None:
    for feature, rise in rises.items():
        old = values.get(feature)
        values[feature] = rise if old is None else old + alpha * (rise - old)


def _top(values: dict[str, float], k: int | None) -> dict[str, float]:
    ranked = sorted(values.items(), key=lambda kv: -kv[1])
    return {str(f): round(v, 6) for f, v in (ranked if k is None else ranked[:k])}


def _loss(model: Any, x: dict[str, Any], y: Any, classifier: bool) -> float:
    if classifier:
        return 1.0 - float((model.predict_proba_one(x) or {}).get(y, 0.0))
    answer = model.predict_one(x)
    return abs(float(y) - float(answer if answer is not None else 0.0))
