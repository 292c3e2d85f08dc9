"""Score the model, the fallback and what was served, on the same labels.

Cumulative metrics feed the report; windowed copies of the gating metric feed promotion and
demotion. Each prediction is adapted to what a metric takes: a probability dict becomes its
most likely class for label metrics, a hard label becomes a certain probability dict.

>>> ev = Evaluator("Accuracy", (), window=2)
>>> ev.update(True, model={True: 0.9, False: 0.1}, fallback=False, served=False)
>>> ev.update(False, model={True: 0.2, False: 0.8}, fallback=False, served=False)
>>> ev.values()["model"], ev.values()["fallback"]
({'Accuracy': 1.0}, {'Accuracy': 0.5})
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

from river import metrics as river_metrics

from pipeline.models import make_metric


def takes_labels(metric: river_metrics.base.Metric) -> bool:
    """Classification metrics that compare labels, not probabilities."""
    return bool(getattr(metric, "requires_labels", False))


def takes_proba(metric: river_metrics.base.Metric) -> bool:
    return isinstance(metric, river_metrics.base.ClassificationMetric) and not takes_labels(metric)


def adapt(metric: river_metrics.base.Metric, y_pred: Any) -> Any:
    """Turn a prediction into what ``metric.update`` expects; None means 'no opinion'.

    >>> adapt(river_metrics.Accuracy(), {"a": 0.3, "b": 0.7})
    'b'
    >>> adapt(river_metrics.LogLoss(), True)
    {True: 1.0}
    """
    if y_pred is None or y_pred == {}:
        return None
    if isinstance(y_pred, dict):
        # Same tie-break as river.base.Classifier.predict_one: the first key of the max.
        return max(y_pred, key=y_pred.__getitem__) if takes_labels(metric) else y_pred
    if takes_proba(metric):
        return {y_pred: 1.0}
    return y_pred


class Windowed:
    """A metric over the last ``size`` updates, kept exact with ``revert``."""

    def __init__(self, metric: river_metrics.base.Metric, size: int) -> None:
        self.metric = metric
        self.size = size
        self.pairs: deque[tuple[Any, Any]] = deque()

    def update(self, y_true: Any, y_pred: Any) -> None:
        self.metric.update(y_true, y_pred)
        self.pairs.append((y_true, y_pred))
        if len(self.pairs) > self.size:
            old_true, old_pred = self.pairs.popleft()
            self.metric.revert(old_true, old_pred)

    def get(self) -> float:
        return float(self.metric.get())

    def __len__(self) -> int:
        return len(self.pairs)


OTHER_SLICE = "(other)"


class Evaluator:
    """Metrics for the three prediction streams, cumulative and windowed."""

    ROLES = ("model", "fallback", "served")

    def __init__(
        self,
        metric: str,
        extra_metrics: tuple[str, ...] = (),
        window: int = 200,
        slice_by: str | None = None,
        max_slices: int = 100,
    ) -> None:
        self.names = (metric, *[m for m in extra_metrics if m != metric])
        self.cumulative: dict[str, dict[str, river_metrics.base.Metric]] = self._fresh()
        self.slice_by = slice_by
        # Fairness: the same metrics per value of one event attribute (a group).
        self.slices: dict[str, dict[str, dict[str, river_metrics.base.Metric]]] = {}
        self.slice_counts: dict[str, Counter[str]] = {}
        self.max_slices = max_slices
        self.window = window
        self.window_model = Windowed(make_metric(metric), window)
        self.window_fallback = Windowed(make_metric(metric), window)

    @property
    def primary(self) -> river_metrics.base.Metric:
        return self.cumulative["model"][self.names[0]]

    @property
    def bigger_is_better(self) -> bool:
        return bool(self.primary.bigger_is_better)

    def _fresh(self) -> dict[str, dict[str, river_metrics.base.Metric]]:
        return {role: {name: make_metric(name) for name in self.names} for role in self.ROLES}

    def update(
        self,
        y_true: Any,
        model: Any,
        fallback: Any,
        served: Any,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        groups = [self.cumulative]
        if self.slice_by is not None and attributes and self.slice_by in attributes:
            key = str(attributes[self.slice_by])
            if key not in self.slices and len(self.slices) >= self.max_slices:
                # A high-cardinality attribute (an id by mistake) must not grow state for weeks.
                key = OTHER_SLICE
            if key not in self.slices:
                self.slices[key] = self._fresh()
                self.slice_counts[key] = Counter()
            groups.append(self.slices[key])
            for role, y_pred in (("model", model), ("fallback", fallback), ("served", served)):
                if y_pred is not None and y_pred != {}:
                    self.slice_counts[key][role] += 1
        for group in groups:
            for role, y_pred in (("model", model), ("fallback", fallback), ("served", served)):
                for metric in group[role].values():
                    pred = adapt(metric, y_pred)
                    if pred is not None:
                        metric.update(y_true, pred)
        # The windows compare model and fallback on the same labels, so only where both spoke.
        model_pred = adapt(self.window_model.metric, model)
        fallback_pred = adapt(self.window_fallback.metric, fallback)
        if model_pred is not None and fallback_pred is not None:
            self.window_model.update(y_true, model_pred)
            self.window_fallback.update(y_true, fallback_pred)

    def values(self) -> dict[str, dict[str, float]]:
        return {
            role: {name: float(metric.get()) for name, metric in by_name.items()}
            for role, by_name in self.cumulative.items()
        }

    def reset_windows(self) -> None:
        self.window_model = Windowed(make_metric(self.names[0]), self.window)
        self.window_fallback = Windowed(make_metric(self.names[0]), self.window)

    def slice_values(self) -> dict[str, Any]:
        """Metrics per slice, and per role the gap between the best and worst slice.

        The gap is on the gating metric, over slices where the role has made predictions.
        """
        if self.slice_by is None:
            return {}
        per_slice = {
            key: {
                role: {name: float(m.get()) for name, m in by_name.items()}
                for role, by_name in roles.items()
            }
            for key, roles in sorted(self.slices.items())
        }
        primary = self.names[0]
        gap: dict[str, float] = {}
        for role in self.ROLES:
            values = [
                float(roles[role][primary].get())
                for key, roles in self.slices.items()
                if self.slice_counts[key][role]
            ]
            gap[role] = max(values) - min(values) if values else 0.0
        return {"attribute": self.slice_by, "metric": primary, "slices": per_slice, "gap": gap}

    def windowed(self) -> dict[str, float | int]:
        return {
            "model": self.window_model.get(),
            "fallback": self.window_fallback.get(),
            "size": len(self.window_model),
        }


class RoleScore:
    """One more role, scored on its own labels: people's answers against ground truth.

    Kept apart from :class:`Evaluator`: a person answers only some events, and is scored only
    where ground truth came too.

    >>> people = RoleScore(("Accuracy",))
    >>> people.update(True, True)
    >>> people.update(False, True)
    >>> people.values(), people.count
    ({'Accuracy': 0.5}, 2)
    """

    def __init__(self, names: tuple[str, ...]) -> None:
        self.metrics = {name: make_metric(name) for name in names}
        self.count = 0

    def update(self, y_true: Any, y_pred: Any) -> None:
        for metric in self.metrics.values():
            pred = adapt(metric, y_pred)
            if pred is not None:
                metric.update(y_true, pred)
        self.count += 1

    def values(self) -> dict[str, float]:
        return {name: float(metric.get()) for name, metric in self.metrics.items()}
