"""Why a model said what it said, for every model kind (:func:`explain`, :class:`Explainer`).

Linear: for a pipeline of transformers ending in ``linear_model.LogisticRegression`` or
``LinearRegression``, the contribution of feature ``f`` is ``w_f * z_f``, where ``z`` is the
input after the pipeline's transformers (e.g. a StandardScaler); the intercept is reported
apart. Trees: the decision path and Saabas's contributions along it. Forests and bagging of
trees: the members' contributions, weighted as the ensemble votes. Anything else: Shapley
values sampled against a bounded background of recent events, at a fixed cost and seeded.

>>> from river import linear_model
>>> model = linear_model.LinearRegression()
>>> for _ in range(3):
...     model.learn_one({"a": 1.0, "b": 2.0}, 3.0)
>>> top = contributions(model, {"a": 1.0, "b": 2.0}, top_k=1)[0]
>>> top["feature"], top["contribution"] == model.weights["b"] * 2.0
('b', True)
"""

from __future__ import annotations

import random
import time
import zlib
from collections import deque
from dataclasses import dataclass, replace
from operator import itemgetter
from typing import Any

from river import compose, ensemble, forest, linear_model
from river.tree.base import Branch, Leaf
from river.tree.hoeffding_tree import HoeffdingTree

from pipeline.schemas import proba_key

LINEAR = (linear_model.LogisticRegression, linear_model.LinearRegression)
_magnitude = itemgetter(0)  # a term's absolute contribution, its sort key


def linear_parts(model: Any) -> tuple[list[Any], Any] | None:
    """(transformers, linear model) if the model is linear at its end, else None."""
    # Pipeline first: River's isinstance sees a pipeline as an instance of its last step.
    if isinstance(model, compose.Pipeline):
        steps = list(model.steps.values())
        if isinstance(steps[-1], LINEAR):
            return steps[:-1], steps[-1]
        return None
    if isinstance(model, LINEAR):
        return [], model
    return None


def contributions(model: Any, x: dict[str, Any], top_k: int) -> list[dict[str, Any]] | None:
    """The ``top_k`` largest contributions by magnitude, or None for a non-linear model."""
    parts = linear_parts(model)
    if parts is None:
        return None
    transformers, linear = parts
    z = dict(x)
    for step in transformers:
        z = step.transform_one(z)
    weights = linear.weights
    get = weights.get
    # Sorted on the magnitude alone (stably, as before); only the top_k become dicts.
    terms = [
        (abs(contribution), name, value, contribution)
        for name, value in z.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
        for contribution in (float(get(name, 0.0) * value),)
    ]
    terms.sort(key=_magnitude, reverse=True)
    return [
        {"feature": name, "value": value, "contribution": contribution}
        for _, name, value, contribution in terms[:top_k]
    ]


def global_weights(model: Any) -> dict[str, float] | None:
    """The linear model's weights (on the transformed scale) and intercept, or None."""
    parts = linear_parts(model)
    if parts is None:
        return None
    linear = parts[1]
    weights = {name: float(w) for name, w in linear.weights.items()}
    weights["(intercept)"] = float(linear.intercept)
    return dict(sorted(weights.items(), key=lambda kv: -abs(kv[1])))


# ---------------------------------------------------------------------------------------------
# Every other model kind. One entry point, :func:`explain`; the model's kind picks the method:
# linear (above, exact), a tree (its path, Saabas), a forest or bagging of trees (the members'
# paths, weighted as the ensemble votes), anything else (sampled Shapley values against recent
# events). Each but the linear one ends its list with a summary entry (no ``feature`` key):
# ``method``, ``target`` (the class explained), ``base`` and ``prediction``, so that the
# contributions add up to ``prediction - base``; a tree's adds its ``path`` and ``leaf``.


@dataclass(frozen=True)
class ExplainSettings:
    """What :class:`Explainer` does, from ``explain.*`` (kept in model versions so that a
    predictor explains as the learner does)."""

    top_k: int = 3
    every: int = 1
    samples: int = 128
    background: int = 32
    seed: int = 0

    @classmethod
    def from_config(cls, config: Any) -> ExplainSettings | None:
        """The settings of an ``ExplainConfig``; None when explanations are off."""
        if not config.enabled:
            return None
        return cls(config.top_k, config.every, config.samples, config.background, config.seed)


def tree_root(model: Any) -> Any:
    """The root node of a River Hoeffding tree, or None.

    River has no public accessor for a tree's root (``debug_one`` and ``draw`` read the private
    ``_root``): this is the one place that reads it, checked to be one of River's public node
    types (``river.tree.base.Branch`` or ``Leaf``), so that a River that renames it gives no
    tree explanation (the sampled one instead) rather than an error.
    """
    if not isinstance(model, HoeffdingTree):
        return None
    root = getattr(model, "_root", None)
    return root if isinstance(root, Branch | Leaf) else None


def _node_value(node: Any, target: Any, classifier: bool) -> float | None:
    """What a node alone predicts for ``target``: the class's share of the node's counts (a
    classifier), the mean of the targets seen (a regressor); None when it has seen nothing."""
    stats = getattr(node, "stats", None)
    if classifier:
        if not isinstance(stats, dict):
            return None
        total = sum(stats.values())
        return float(stats.get(target, 0.0)) / total if total > 0 else None
    mean = getattr(stats, "mean", None)
    if mean is None or not getattr(stats, "n", 1):
        return None
    return float(mean.get())


def _branch_taken(node: Any, x: dict[str, Any]) -> tuple[int, bool]:
    """The branch ``x`` takes, and whether its feature was missing (or not comparable) and the
    most travelled branch was taken instead, as River's trees do when predicting."""
    try:
        return node.branch_no(x), False
    except (KeyError, TypeError):
        return node.most_common_path()[0], True


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, bool | int | float | str) or value is None else str(value)


def tree_contributions(
    model: Any, x: dict[str, Any], target: Any, prediction: float, classifier: bool
) -> tuple[float, dict[str, float], list[dict[str, Any]], Any] | None:
    """Saabas's attribution of one tree's answer: along the path ``x`` takes, each split's
    feature gets the change in the predicted value from the node to the next one; the last
    step ends at ``prediction`` (what the tree served, whatever its leaf model), so the
    contributions add up to ``prediction`` minus the root's value exactly.

    Returns (root value, contributions by feature, path, leaf), or None for a tree that has no
    split yet (nothing to attribute along) or is not a River tree.
    """
    root = tree_root(model)
    if root is None or not isinstance(root, Branch):
        return None
    base = _node_value(root, target, classifier)
    if base is None:
        return None
    contributions: dict[str, float] = {}
    path: list[dict[str, Any]] = []
    node: Any = root  # a River DTBranch (feature, branch_no, repr_branch) or a leaf
    value = base
    while isinstance(node, Branch):
        index, missing = _branch_taken(node, x)
        child = node.children[index] if index < len(node.children) else None
        if child is None:
            break
        if isinstance(child, Branch):
            child_value = _node_value(child, target, classifier)
            following = value if child_value is None else child_value
        else:
            following = prediction  # the leaf: what was served
        split: Any = node  # a River DTBranch: its feature and test
        feature = split.feature
        contributions[feature] = contributions.get(feature, 0.0) + (following - value)
        path.append(
            {
                "feature": _jsonable(feature),
                "test": split.repr_branch(index),
                "branch": index,
                "missing": missing,
            }
        )
        node, value = child, following
    if isinstance(node, Branch):  # an empty child: the rest of the change goes to the split
        contributions[path[-1]["feature"]] += prediction - value
    leaf = None
    stats = getattr(node, "stats", None)
    if isinstance(stats, dict):
        total = sum(stats.values()) or 1.0
        leaf = {proba_key(k): float(v) / total for k, v in stats.items()}
    elif stats is not None and hasattr(stats, "mean"):
        leaf = {"mean": float(stats.mean.get()), "n": float(getattr(stats, "n", 0.0))}
    return base, contributions, path, leaf


def _ensemble_members(model: Any) -> list[Any] | None:
    """The members of a forest or bagging ensemble River knows, or None."""
    if isinstance(
        model,
        forest.ARFClassifier
        | forest.ARFRegressor
        | ensemble.BaggingClassifier
        | ensemble.BaggingRegressor,
    ):
        return list(model)
    return None


def _member_weights(model: Any, answers: list[Any], classifier: bool) -> list[float] | None:
    """Each member's weight in the ensemble's answer, which is then the weighted sum of the
    members' (River 0.26's ``predict_proba_one``/``predict_one`` of each ensemble, mirrored;
    :func:`ensemble_contributions` checks the sum against what was served). None where the
    ensemble's answer is no weighted sum (a median) or no answer at all."""
    n = len(answers)
    if n == 0:
        return None
    if classifier:
        # ARF: each member's probabilities times its metric (where positive), normalised over
        # all the votes; bagging: the plain sum, normalised.
        metrics = None
        if isinstance(model, forest.ARFClassifier) and not model.disable_weighted_vote:
            metrics = getattr(model, "_metrics", None)
        scales = []
        for i in range(n):
            m = metrics[i].get() if metrics is not None else 0.0
            scales.append(m if m > 0.0 else 1.0)
        total = sum(s * sum(a.values()) for s, a in zip(scales, answers, strict=True))
        return None if total <= 0 else [s / total for s in scales]
    if isinstance(model, forest.ARFRegressor):
        if model.aggregation_method != "mean":  # a median is no weighted sum
            return None
        metrics = getattr(model, "_metrics", None)
        if not model.disable_weighted_vote and metrics is not None:
            raw = [metrics[i].get() for i in range(n)]
            total = sum(raw)
            if total != 0:
                inverted = [total - w for w in raw]  # the higher the error, the less it counts
                norm = sum(inverted)
                return None if norm == 0 else [w / norm / n for w in inverted]
    return [1.0 / n] * n


def ensemble_contributions(
    model: Any, x: dict[str, Any], target: Any, prediction: float, classifier: bool
) -> tuple[float, dict[str, float]] | None:
    """A forest's or bagging's attribution: each member tree's Saabas contributions and root
    value, weighted as the ensemble weighs the members' answers, so that they add up to the
    ensemble's answer minus the weighted roots. None if a member is no tree, no member has
    split yet, or the weighted answers do not give back what was served (a River whose
    ensembles vote otherwise): the caller then samples."""
    members = _ensemble_members(model)
    if not members or not all(isinstance(m, HoeffdingTree) for m in members):
        return None
    if classifier:
        answers = [m.predict_proba_one(x) for m in members]
        values = [float(a.get(target, 0.0)) for a in answers]
    else:
        answers = [m.predict_one(x) for m in members]
        values = [float(a) for a in answers]
    weights = _member_weights(model, answers, classifier)
    if weights is None:
        return None
    served = sum(w * v for w, v in zip(weights, values, strict=True))
    if abs(served - prediction) > 1e-9 * max(1.0, abs(prediction)):
        return None
    base = 0.0
    contributions: dict[str, float] = {}
    split = False
    for member, weight, value in zip(members, weights, values, strict=True):
        parts = tree_contributions(member, x, target, value, classifier)
        if parts is None:  # no split yet: the member's answer is all base
            base += weight * value
            continue
        split = True
        base += weight * parts[0]
        for feature, c in parts[1].items():
            contributions[feature] = contributions.get(feature, 0.0) + weight * c
    return (base, contributions) if split else None


def sampled_contributions(
    predict: Any,
    x: dict[str, Any],
    background: list[dict[str, Any]],
    samples: int,
    rng: random.Random,
) -> tuple[float, dict[str, float]] | None:
    """Interventional Shapley values of ``x``'s features, sampled by permutation against
    background events, for any model (``predict``: features -> number).

    About ``samples`` model calls: P = samples // d permutations (d features), shared evenly
    by min(P, len(background)) background events drawn without replacement. Along each
    permutation the features are switched one by one from the background event's values to
    ``x``'s, each switch's change in the answer going to the feature switched: the changes
    telescope, so the contributions add up exactly to ``predict(x)`` minus the mean answer on
    the background events drawn (all of them when P >= the background's size).

    Returns (that mean, contributions), or None without features or background.
    """
    features = list(x)
    d = len(features)
    if d == 0 or not background:
        return None
    permutations = max(1, samples // d)
    drawn = rng.sample(background, min(permutations, len(background)))
    per_event = max(1, permutations // len(drawn))
    runs = len(drawn) * per_event
    fx = float(predict(dict(x)))
    contributions = dict.fromkeys(features, 0.0)
    base = 0.0
    for z in drawn:
        start = {f: z[f] for f in features if f in z}
        fz = float(predict(dict(start)))
        base += fz / len(drawn)
        for _ in range(per_event):
            order = features[:]
            rng.shuffle(order)
            point = dict(start)
            previous = fz
            for i, feature in enumerate(order):
                point[feature] = x[feature]
                now = fx if i == d - 1 else float(predict(dict(point)))
                contributions[feature] += (now - previous) / runs
                previous = now
    return base, contributions


def _split_pipeline(model: Any, x: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The pipeline's last step and ``x`` as the transformers hand it over (the model and
    ``x`` themselves for no pipeline): trees and ensembles are explained on what they see."""
    if isinstance(model, compose.Pipeline):
        steps = list(model.steps.values())
        z = dict(x)
        for step in steps[:-1]:
            z = step.transform_one(z)
        return steps[-1], z
    return model, x


def _entries(
    contributions: dict[str, float], x: dict[str, Any], top_k: int
) -> list[dict[str, Any]]:
    terms = sorted(contributions.items(), key=lambda kv: -abs(kv[1]))[:top_k]
    return [
        {"feature": _jsonable(f), "value": _jsonable(x.get(f)), "contribution": float(c)}
        for f, c in terms
    ]


def explain(
    model: Any,
    x: dict[str, Any],
    target: Any,
    prediction: float,
    classifier: bool,
    settings: ExplainSettings,
    background: list[dict[str, Any]],
    rng: random.Random,
) -> list[dict[str, Any]] | None:
    """The explanation of one served answer: ``prediction`` is the served class's probability
    (``target``) for a classifier, the value for a regressor. The ``top_k`` largest
    contributions, then (but for a linear model, explained exactly as before) a summary entry:
    ``method`` (``tree``, ``ensemble``, ``sampled``), ``target``, ``base``, ``prediction``,
    and a tree's ``path`` and ``leaf``."""
    top_k = settings.top_k
    linear = contributions(model, x, top_k)
    if linear is not None:
        return linear
    summary: dict[str, Any] = {
        "method": "",
        "target": None if target is None else proba_key(target),
        "base": 0.0,
        "prediction": float(prediction),
    }
    last, z = _split_pipeline(model, x)
    parts = tree_contributions(last, z, target, prediction, classifier)
    if parts is not None:
        base, found, path, leaf = parts
        summary.update(method="tree", base=base, path=path, leaf=leaf)
        return [*_entries(found, z, top_k), summary]
    together = ensemble_contributions(last, z, target, prediction, classifier)
    if together is not None:
        summary.update(method="ensemble", base=together[0])
        return [*_entries(together[1], z, top_k), summary]
    if classifier:

        def predict(point: dict[str, Any]) -> float:
            return float((model.predict_proba_one(point) or {}).get(target, 0.0))
    else:

        def predict(point: dict[str, Any]) -> float:
            value = model.predict_one(point)
            return 0.0 if value is None else float(value)

    sampled = sampled_contributions(predict, x, background, settings.samples, rng)
    if sampled is None:
        return None
    summary.update(method="sampled", base=sampled[0])
    return [*_entries(sampled[1], x, top_k), summary]


@dataclass
class ExplainMemory:
    """What a server's explanations depend on besides the model and the event: the last
    ``background`` events' features (a sampled explanation's background) and how many
    model-served predictions came so far (which one in ``every`` is explained). Small and
    bounded; the learning core keeps it in its state, so a restarted writer explains as an
    uninterrupted one would.

    >>> memory = ExplainMemory.for_settings(ExplainSettings(background=2))
    >>> for i in range(3):
    ...     memory.background.append({"x": i})
    >>> list(memory.background), memory.served
    ([{'x': 1}, {'x': 2}], 0)
    """

    background: deque[dict[str, Any]]
    served: int = 0

    @classmethod
    def for_settings(
        cls, settings: ExplainSettings, kept: ExplainMemory | None = None
    ) -> ExplainMemory:
        """The memory these settings need: ``kept`` (restored from a checkpoint) when it is
        one of this size, else a new one holding what it can of ``kept``'s."""
        size = settings.background
        if kept is not None and kept.background.maxlen == size:
            return kept
        background = deque(kept.background if kept is not None else (), maxlen=size)
        return cls(background, kept.served if kept is not None else 0)


class Explainer:
    """Explanations as a server gives them: one served prediction in ``every``, each seeded by
    the event's id (a replay from the same start explains alike), against the last
    ``background`` events seen; the time spent is counted so that its share can be shown.
    What it remembers between events is an :class:`ExplainMemory` (:meth:`remember` hands it
    one to go on from)."""

    __slots__ = ("_background", "classifier", "explained", "memory", "seconds", "settings")

    def __init__(self, settings: ExplainSettings, classifier: bool) -> None:
        self.settings = settings
        self.classifier = classifier
        self.memory = ExplainMemory.for_settings(settings)
        self._background = self.memory.background  # observe()'s, without the attribute chain
        self.explained = 0
        self.seconds = 0.0

    def remember(self, memory: ExplainMemory | None) -> ExplainMemory:
        """Go on from ``memory`` (e.g. a checkpoint's), resized to the settings if need be;
        returns the memory used, to keep."""
        self.memory = ExplainMemory.for_settings(self.settings, memory)
        self._background = self.memory.background
        return self.memory

    def report(self, elapsed: float | None = None) -> dict[str, Any]:
        """What explaining has cost: how many, the seconds spent, the mean per explanation and,
        given the seconds the process has run, their share of it."""
        each = self.seconds / self.explained * 1000 if self.explained else 0.0
        report = {
            "explained": self.explained,
            "seconds": round(self.seconds, 6),
            "ms_each": round(each, 4),
        }
        if elapsed:
            report["share"] = round(self.seconds / elapsed, 6)
        return report

    def observe(self, x: dict[str, Any]) -> None:
        """Keep an event's features as background (every event, served by the model or not)."""
        self._background.append(x)

    def explain(
        self, model: Any, x: dict[str, Any], event_id: str, target: Any, prediction: Any
    ) -> list[dict[str, Any]] | None:
        """The explanation of a model-served answer, or None (not this one in ``every``, or
        the model could not be explained: an explanation never stops serving)."""
        memory = self.memory
        served = memory.served
        memory.served = served + 1
        if served % self.settings.every:
            return None
        return self.explain_now(model, x, event_id, target, prediction)

    def explain_now(
        self, model: Any, x: dict[str, Any], event_id: str, target: Any, prediction: Any
    ) -> list[dict[str, Any]] | None:
        """As :meth:`explain`, whatever ``every`` says (a review request's model opinion)."""
        started = time.perf_counter()
        rng = random.Random(self.settings.seed * 1_000_003 + zlib.crc32(event_id.encode()))
        try:
            found = explain(
                model,
                x,
                target,
                float(prediction),
                self.classifier,
                self.settings,
                list(self._background),
                rng,
            )
        except Exception:  # a model that cannot be explained still serves its answer
            found = None
        self.seconds += time.perf_counter() - started
        self.explained += 1
        return found


def explain_answer(
    model: Any,
    x: dict[str, Any],
    classifier: bool,
    settings: ExplainSettings,
    background: list[dict[str, Any]],
    event_id: str = "",
) -> dict[str, Any]:
    """The model's answer to ``x`` and its explanation, as a server would give them (for
    ``riverline explain``: a recomputed or what-if event): ``prediction``, ``confidence`` (a
    classifier's), ``explanation`` (None if the model has no answer or cannot be explained)."""
    explainer = Explainer(replace(settings, every=1), classifier)
    for z in background:
        explainer.observe(z)
    explainer.observe(x)
    if classifier:
        proba = model.predict_proba_one(x) or {}
        if not proba:
            return {"prediction": None, "confidence": None, "explanation": None}
        target = max(proba, key=proba.__getitem__)
        confidence = float(proba[target])
        found = explainer.explain(model, x, event_id, target, confidence)
        return {"prediction": target, "confidence": confidence, "explanation": found}
    value = model.predict_one(x)
    if value is None:
        return {"prediction": None, "confidence": None, "explanation": None}
    found = explainer.explain(model, x, event_id, None, value)
    return {"prediction": value, "confidence": None, "explanation": found}
