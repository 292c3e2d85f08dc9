"""Score the model, the fallback and what was served, on the same labels.

Cumulative metrics feed the report; windowed copies of the gating metric feed promotion and
demotion. Each prediction is adapted to what a metric takes: a probability dict becomes its
most likely class for label metrics, a hard label becomes a certain probability dict.

>>> ev = Evaluator("Accuracy", (), window=2)
>>> ev.update(True, model={True: 0.9, False: 0.1}, fallback=False, served=False)  # the model's
True
>>> ev.update(False, model={True: 0.2, False: 0.8}, fallback=False, served=False)
False
>>> ev.values()["model"], ev.values()["fallback"]
({'Accuracy': 1.0}, {'Accuracy': 0.5})
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any, Final

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


Plan = list[tuple[int, list[tuple[int, Any]]]]


def _updater(metric: river_metrics.base.Metric) -> Any:
    """``metric.update``, or straight its confusion matrix's update where that is all the
    metric's update does (Accuracy, F1, ...): the same counts, one call fewer."""
    if type(metric).update is river_metrics.base.ClassificationMetric.update:
        return metric.cm.update  # type: ignore[attr-defined]
    return metric.update


def _reverter(metric: river_metrics.base.Metric) -> Any:
    if type(metric).revert is river_metrics.base.ClassificationMetric.revert:
        return metric.cm.revert  # type: ignore[attr-defined]
    return metric.revert


def _kind(metric: river_metrics.base.Metric) -> int:
    """0: the metric takes a label; 1: a probability dict; 2: the prediction as it is."""
    if takes_labels(metric):
        return 0
    return 1 if takes_proba(metric) else 2


def _adapted(y_pred: Any) -> tuple[Any, Any, Any] | None:
    """``adapt`` for the three kinds of metric at once; None means 'no opinion'.

    >>> _adapted({"a": 0.3, "b": 0.7})[0], _adapted(True)
    ('b', (True, {True: 1.0}, True))
    """
    if y_pred is None or y_pred == {}:
        return None
    if isinstance(y_pred, dict):
        # Same tie-break as river.base.Classifier.predict_one: the first key of the max.
        return (max(y_pred, key=y_pred.__getitem__), y_pred, y_pred)
    return (y_pred, {y_pred: 1.0}, y_pred)


def argmax(proba: dict[Any, Any]) -> Any:
    """``max(proba, key=proba.__getitem__)``: the first most likely class, as River's
    ``predict_one`` picks it. Two classes (the usual case) without the call per key: the same
    comparison, so the same answer, ties and NaN included.

    >>> argmax({"a": 0.5, "b": 0.5}), argmax({"a": 0.2, "b": 0.7}), argmax({1: 0.1, 2: 0.2, 3: 0.7})
    ('a', 'b', 3)
    """
    if len(proba) == 2:
        first, second = proba
        return second if proba[second] > proba[first] else first
    return max(proba, key=proba.__getitem__)


class _Abstain:
    def __repr__(self) -> str:
        return "ABSTAIN"


ABSTAIN: Final = _Abstain()  # no opinion (None could be a dict's most likely key)


def _label(y_pred: Any) -> Any:
    """``_adapted(y_pred)[0]``: the label a label metric takes, ABSTAIN for no opinion.

    >>> _label({"a": 0.3, "b": 0.7}), _label(False), _label({}), _label(None)
    ('b', False, ABSTAIN, ABSTAIN)
    """
    if y_pred is None:
        return ABSTAIN
    kind = type(y_pred)
    if kind is dict:
        # Same tie-break as river.base.Classifier.predict_one: the first key of the max.
        return argmax(y_pred) if y_pred else ABSTAIN
    if kind in _PLAIN:
        return y_pred  # never equal to {}
    adapted = _adapted(y_pred)
    return ABSTAIN if adapted is None else adapted[0]


_PLAIN = frozenset({bool, int, float, str})


class Windowed:
    """A metric over the last ``size`` updates, kept exact with ``revert``.

    River's ``Accuracy`` (the default gating metric) is kept as the count of hits among the
    pairs in the window instead: its value is hits / pairs, which is what River's confusion
    matrix divides too (sums of +1.0 and -1.0, exact integers), so the two agree to the last
    digit, for a fraction of the work. The River metric is then rebuilt from the pairs when
    asked for (``metric``, and in a checkpoint, which keeps its old shape).

    >>> window = Windowed(river_metrics.Accuracy(), size=2)
    >>> for y, p in ((True, True), (True, False), (False, False)):
    ...     window.update(y, p)
    >>> window.get(), window.metric.get(), len(window)
    (0.5, 0.5, 2)
    """

    def __init__(self, metric: river_metrics.base.Metric, size: int) -> None:
        self.size = size
        self.pairs: deque[tuple[Any, Any]] = deque()
        self._metric: river_metrics.base.Metric | None = metric
        self._hits: int | None = self._count_hits(metric)

    def _count_hits(self, metric: river_metrics.base.Metric) -> int | None:
        """Hits among the pairs, when ``metric`` is a plain Accuracy of exactly them."""
        if type(metric) is not river_metrics.Accuracy:
            return None
        cm = metric.cm
        hits = sum(1 for y_true, y_pred in self.pairs if y_true == y_pred)
        n = len(self.pairs)
        if cm.n_samples != n or cm.total_weight != n or cm.total_true_positives != hits:
            return None  # weighted, or shared with something else: kept through River
        return hits

    @property
    def metric(self) -> river_metrics.base.Metric:
        metric = self._metric
        if metric is None:
            metric = self._metric = river_metrics.Accuracy()
            for y_true, y_pred in self.pairs:
                metric.update(y_true, y_pred)
        return metric

    def __getstate__(self) -> dict[str, Any]:
        # The shape checkpoints always had: a River metric of the pairs, the size, the pairs.
        return {"metric": self.metric, "size": self.size, "pairs": self.pairs}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        state.pop("_calls", None)
        metric = state.pop("metric")
        self.__dict__.update(state)
        self._metric = metric
        self._hits = self._count_hits(metric)

    def update(self, y_true: Any, y_pred: Any) -> None:
        pairs = self.pairs
        hits = self._hits
        if hits is None:
            calls = self.__dict__.get("_calls")
            if calls is None:
                metric = self.metric
                calls = self.__dict__["_calls"] = (_updater(metric), _reverter(metric))
            calls[0](y_true, y_pred)
            pairs.append((y_true, y_pred))
            if len(pairs) > self.size:
                old_true, old_pred = pairs.popleft()
                calls[1](old_true, old_pred)
            return
        self._metric = None  # rebuilt from the pairs when asked for
        pairs.append((y_true, y_pred))
        if y_true == y_pred:
            hits += 1
        if len(pairs) > self.size:
            old_true, old_pred = pairs.popleft()
            if old_true == old_pred:
                hits -= 1
        self._hits = hits

    def get(self) -> float:
        hits = self._hits
        if hits is None:
            return float(self.metric.get())
        n = len(self.pairs)
        # River's Accuracy: true positives / total weight, 0.0 before any update.
        return hits / n if n else 0.0

    def __len__(self) -> int:
        return len(self.pairs)


OTHER_SLICE = "(other)"
# Distinct (truth, model, fallback, served) labels counted before they are scored: bounds the
# memory with many classes; with few, the matrices are brought up to date when read.
_MAX_COUNTED = 256
# (truth, model, fallback, served) -> [labels]: a count in a list, added to in place, so that a
# label already seen hashes its key once, not twice (get, then set).
Counted = dict[tuple[Any, Any, Any, Any], list[int]]


class _Paired:
    """The two Accuracy windows while the label path updates them together (nearly always):
    one deque of the labels' (truth, model's label, fallback's label, ...) tuples, which the
    counted labels' keys already are, and each window's hits. Two pairs per label built,
    appended and popped cost more than the rest of the windows' work; the windows' own pairs
    are made again from these when anything else reads them (``Evaluator._unpair``)."""

    __slots__ = ("fallback_hits", "keys", "model_hits", "size")

    def __init__(self, keys: deque[tuple[Any, ...]], size: int, model: int, fallback: int) -> None:
        self.keys = keys
        self.size = size
        self.model_hits = model
        self.fallback_hits = fallback


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
        self.cumulative = self._fresh()
        self.slice_by = slice_by
        # Fairness: the same metrics per value of one event attribute (a group).
        self.slices: dict[str, dict[str, dict[str, river_metrics.base.Metric]]] = {}
        self.slice_counts: dict[str, Counter[str]] = {}
        self.max_slices = max_slices
        self.window = window
        self.window_model = Windowed(make_metric(metric), window)
        self.window_fallback = Windowed(make_metric(metric), window)

    # Derived (not pickled): the windows as one, see _Paired; None: each in its Windowed.
    _paired: _Paired | None = None

    @property
    def window_model(self) -> Windowed:
        """The model's window of the gating metric, up to date."""
        if self._paired is not None:
            self._unpair()
        return self.__dict__["window_model"]  # type: ignore[no-any-return]

    @window_model.setter
    def window_model(self, value: Windowed) -> None:
        if self._paired is not None:
            self._unpair()
        self.__dict__["window_model"] = value

    @property
    def window_fallback(self) -> Windowed:
        """The fallback's window of the gating metric, up to date."""
        if self._paired is not None:
            self._unpair()
        return self.__dict__["window_fallback"]  # type: ignore[no-any-return]

    @window_fallback.setter
    def window_fallback(self, value: Windowed) -> None:
        if self._paired is not None:
            self._unpair()
        self.__dict__["window_fallback"] = value

    def _pair(self) -> _Paired | None:
        """The windows as one (see _Paired), when both count Accuracy hits, are the same size
        and hold the same truths, as the label path leaves them; None otherwise."""
        model: Windowed = self.__dict__["window_model"]
        fallback: Windowed = self.__dict__["window_fallback"]
        if model._hits is None or fallback._hits is None or model.size != fallback.size:
            return None
        if len(model.pairs) != len(fallback.pairs) or len(model.pairs) > model.size:
            return None
        keys: deque[tuple[Any, ...]] = deque()
        for (y_model, by_model), (y_fallback, by_fallback) in zip(
            model.pairs, fallback.pairs, strict=True
        ):
            if y_model is not y_fallback:
                return None
            keys.append((y_model, by_model, by_fallback))
        paired = self.__dict__["_paired"] = _Paired(keys, model.size, model._hits, fallback._hits)
        return paired

    def _unpair(self) -> None:
        """Each window's pairs and hits again from the paired ones (updated since pairing,
        so their River metrics are rebuilt from the pairs when asked for, as after any
        update)."""
        paired: _Paired = self.__dict__.pop("_paired")
        model: Windowed = self.__dict__["window_model"]
        fallback: Windowed = self.__dict__["window_fallback"]
        model.pairs = deque([(key[0], key[1]) for key in paired.keys])
        fallback.pairs = deque([(key[0], key[2]) for key in paired.keys])
        model._hits, fallback._hits = paired.model_hits, paired.fallback_hits
        model._metric = fallback._metric = None

    @property
    def cumulative(self) -> dict[str, dict[str, river_metrics.base.Metric]]:
        """Role -> metric name -> River metric, up to date (counted labels scored first)."""
        self._flush()
        return self.__dict__["cumulative"]  # type: ignore[no-any-return]

    @cumulative.setter
    def cumulative(self, value: dict[str, dict[str, river_metrics.base.Metric]]) -> None:
        self.__dict__["cumulative"] = value

    def _flush(self) -> None:
        """Score the counted labels: one confusion-matrix update per distinct (truth,
        prediction) pair and role, weighted by how many times it came.

        The same matrix as one update per label: every cell, row, column, total and the true
        positives are sums of ones, i.e. exact integers, in a float either way; cells are
        created in the order their first label came; ``n_samples`` counts the labels.
        """
        updates = self.__dict__.get("_labels_only")
        counted = updates[3] if isinstance(updates, tuple) else None
        if not counted:
            return
        labels = [(key, cell[0]) for key, cell in counted.items()]
        counted.clear()
        cumulative = self.__dict__["cumulative"]
        for index, role in enumerate(self.ROLES, start=1):
            pairs: dict[tuple[Any, Any], int] = {}
            for key, n in labels:
                pred = key[index]
                if pred is not ABSTAIN:
                    pair = (key[0], pred)
                    pairs[pair] = pairs.get(pair, 0) + n
            for metric in cumulative[role].values():
                cm = metric.cm  # type: ignore[attr-defined]
                for (y_true, y_pred), n in pairs.items():
                    cm.update(y_true, y_pred, float(n))
                    cm.n_samples += n - 1

    @property
    def primary(self) -> river_metrics.base.Metric:
        return self.cumulative["model"][self.names[0]]

    @property
    def bigger_is_better(self) -> bool:
        return bool(self.primary.bigger_is_better)

    def _fresh(self) -> dict[str, dict[str, river_metrics.base.Metric]]:
        return {role: {name: make_metric(name) for name in self.names} for role in self.ROLES}

    # What each metric takes and its update function, worked out once per group of metrics.
    # Not pickled (derived from the metrics), so old checkpoints load and resume the same.
    def _kinds(self, group: dict[str, dict[str, river_metrics.base.Metric]]) -> Plan:
        return [
            (index, [(_kind(m), _updater(m)) for m in group[role].values()])
            for index, role in enumerate(self.ROLES)
        ]

    def __getstate__(self) -> dict[str, Any]:
        self._flush()
        if self._paired is not None:
            self._unpair()
        state = self.__dict__.copy()
        for derived in ("_plans", "_window_kind", "_labels_only", "_paired"):
            state.pop(derived, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _plan(self, key: str | None) -> Plan:
        plans: dict[str | None, Plan] | None = self.__dict__.get("_plans")
        if plans is None:
            plans = self.__dict__["_plans"] = {}
        plan = plans.get(key)
        if plan is None:
            plan = plans[key] = self._kinds(self.cumulative if key is None else self.slices[key])
        return plan

    # Derived (not pickled, flushed first): per role, the updates of its metrics when every
    # metric, the windows' too, takes a label (Accuracy, F1, ...), and where all of them are
    # counts in a River confusion matrix (Accuracy, MacroF1, ...), the labels counted since
    # the matrices were last brought up to date (see _flush); False when a metric takes more.
    _labels_only: tuple[list[Any], list[Any], list[Any], Counted | None] | bool | None = None

    def _label_updates(self) -> tuple[list[Any], list[Any], list[Any], Counted | None] | bool:
        plan = self._plan(None)
        if self.slice_by is not None or _kind(self.window_model.metric) != 0:
            return False
        if any(kind != 0 for _, metrics in plan for kind, _ in metrics):
            return False
        model, fallback, served = ([update for _, update in metrics] for _, metrics in plan)
        counts = all(
            type(metric).update is river_metrics.base.ClassificationMetric.update
            and type(getattr(metric, "cm", None)) is river_metrics.ConfusionMatrix
            for by_name in self.__dict__["cumulative"].values()
            for metric in by_name.values()
        )
        return model, fallback, served, {} if counts else None

    def update(
        self,
        y_true: Any,
        model: Any,
        fallback: Any,
        served: Any,
        attributes: dict[str, Any] | None = None,
    ) -> Any:
        """Score the three predictions on ``y_true``; returns the model's label (its most
        likely class, a regressor's value; ABSTAIN: no opinion), which the core's drift
        detector reads too."""
        return self.score(y_true, model, fallback, served, attributes)[0]

    def score(
        self,
        y_true: Any,
        model: Any,
        fallback: Any,
        served: Any,
        attributes: dict[str, Any] | None = None,
    ) -> tuple[Any, float, float, int]:
        """``update``, then ``windowed_values()``: the model's label and the windows' values
        after this label, in one call (the label path's)."""
        updates = self._labels_only
        if updates is None:
            updates = self._labels_only = self._label_updates()
        if type(updates) is tuple:
            # Every metric takes a label: each prediction's, worked out once.
            # _label, inlined for the usual types: a probability dict, a plain fallback label.
            if type(model) is dict:
                if len(model) == 2:  # argmax, inlined
                    first, second = model
                    by_model = second if model[second] > model[first] else first
                else:
                    by_model = argmax(model) if model else ABSTAIN
            else:
                by_model = _label(model)
            by_fallback = fallback if type(fallback) in _PLAIN else _label(fallback)
            if served is fallback:
                by_served = by_fallback
            elif served is model:
                by_served = by_model
            else:
                by_served = _label(served)
            # The label's key: counted below, and the windows' pair of pairs.
            key = (y_true, by_model, by_fallback, by_served)
            counted = updates[3]
            if counted is not None:
                # Counted now, scored in the matrices when someone reads them (_flush).
                try:
                    cell = counted.get(key)
                except TypeError:  # unhashable: River's update raises it, as it always did
                    counted = None
                    self._flush()
                else:
                    if cell is not None:
                        cell[0] += 1
                    else:
                        counted[key] = [1]
                        if len(counted) > _MAX_COUNTED:
                            self._flush()
            if counted is None:
                if by_model is not ABSTAIN:
                    for update in updates[0]:
                        update(y_true, by_model)
                if by_fallback is not ABSTAIN:
                    for update in updates[1]:
                        update(y_true, by_fallback)
                if by_served is not ABSTAIN:
                    for update in updates[2]:
                        update(y_true, by_served)
            if by_model is not ABSTAIN and by_fallback is not ABSTAIN:
                paired = self._paired
                if paired is None:
                    paired = self._pair()
                    if paired is None:  # kept through River: each window on its own
                        self.window_model.update(y_true, by_model)
                        self.window_fallback.update(y_true, by_fallback)
                        return (by_model, *self.windowed_values())
                # Windowed.update for the two Accuracy windows at once, inlined.
                keys = paired.keys
                keys.append(key)
                model_hits, fallback_hits = paired.model_hits, paired.fallback_hits
                if y_true == by_model:
                    model_hits += 1
                if y_true == by_fallback:
                    fallback_hits += 1
                if len(keys) > paired.size:
                    old = keys.popleft()
                    if old[0] == old[1]:
                        model_hits -= 1
                    if old[0] == old[2]:
                        fallback_hits -= 1
                paired.model_hits, paired.fallback_hits = model_hits, fallback_hits
                n = len(keys)
                return by_model, model_hits / n, fallback_hits / n, n  # windowed_values
            return (by_model, *self.windowed_values())
        return (self._update(y_true, model, fallback, served, attributes), *self.windowed_values())

    def _update(
        self,
        y_true: Any,
        model: Any,
        fallback: Any,
        served: Any,
        attributes: dict[str, Any] | None = None,
    ) -> Any:
        # The same as ``adapt`` for every metric, with each prediction adapted once per kind
        # (and once only when the served prediction is the model's or the fallback's).
        by_model = _adapted(model)
        by_fallback = _adapted(fallback)
        if served is fallback:
            by_served = by_fallback
        elif served is model:
            by_served = by_model
        else:
            by_served = _adapted(served)
        adapted = (by_model, by_fallback, by_served)
        plans = [self._plan(None)]
        if self.slice_by is not None and attributes and self.slice_by in attributes:
            key = str(attributes[self.slice_by])
            if key not in self.slices and len(self.slices) >= self.max_slices:
                # A high-cardinality attribute (an id by mistake) must not grow state for weeks.
                key = OTHER_SLICE
            if key not in self.slices:
                self.slices[key] = self._fresh()
                self.slice_counts[key] = Counter()
            plans.append(self._plan(key))
            for role, by_kind in zip(self.ROLES, adapted, strict=True):
                if by_kind is not None:
                    self.slice_counts[key][role] += 1
        for plan in plans:
            for index, metrics in plan:
                by_kind = adapted[index]
                if by_kind is None:
                    continue
                for metric_kind, update in metrics:
                    update(y_true, by_kind[metric_kind])
        # The windows compare model and fallback on the same labels, so only where both spoke.
        if by_model is not None and by_fallback is not None:
            kind: int | None = self.__dict__.get("_window_kind")
            if kind is None:
                kind = self.__dict__["_window_kind"] = _kind(self.window_model.metric)
            self.window_model.update(y_true, by_model[kind])
            self.window_fallback.update(y_true, by_fallback[kind])
        return ABSTAIN if by_model is None else by_model[0]

    def values(self) -> dict[str, dict[str, float]]:
        return {
            role: {name: float(metric.get()) for name, metric in by_name.items()}
            for role, by_name in self.cumulative.items()
        }

    def reset_windows(self) -> None:
        self.__dict__.pop("_paired", None)  # the windows start afresh: nothing to keep
        self.window_model = Windowed(make_metric(self.names[0]), self.window)
        self.window_fallback = Windowed(make_metric(self.names[0]), self.window)
        self.__dict__.pop("_window_kind", None)
        self._flush()  # the counted labels are kept with the derived updates dropped here
        self.__dict__.pop("_labels_only", None)

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
        model, fallback, size = self.windowed_values()
        return {"model": model, "fallback": fallback, "size": size}

    def windowed_values(self) -> tuple[float, float, int]:
        """``windowed()`` as a tuple, for the label path (no dict per label)."""
        paired = self._paired
        if paired is not None:
            n = len(paired.keys)
            # Windowed.get of each, inlined: River's Accuracy is 0.0 before any update.
            return (paired.model_hits / n, paired.fallback_hits / n, n) if n else (0.0, 0.0, 0)
        model, fallback = self.window_model, self.window_fallback
        model_hits, fallback_hits = model._hits, fallback._hits
        n = len(model.pairs)
        if model_hits is None or fallback_hits is None or n == 0 or len(fallback.pairs) != n:
            return (model.get(), fallback.get(), n)
        # Windowed.get, inlined.
        return (model_hits / n, fallback_hits / n, n)


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
