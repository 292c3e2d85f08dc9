"""Why a linear model said what it said: each feature's weight times its (scaled) value.

For a pipeline of transformers ending in ``linear_model.LogisticRegression`` or
``LinearRegression``, the contribution of feature ``f`` is ``w_f * z_f``, where ``z`` is the
input after the pipeline's transformers (e.g. a StandardScaler); the intercept is reported
apart. Other models (trees, forests, neighbours) get no per-prediction explanation:
docs/how-to/monitor.md says what is offered for them.

>>> from river import linear_model
>>> model = linear_model.LinearRegression()
>>> for _ in range(3):
...     model.learn_one({"a": 1.0, "b": 2.0}, 3.0)
>>> top = contributions(model, {"a": 1.0, "b": 2.0}, top_k=1)[0]
>>> top["feature"], top["contribution"] == model.weights["b"] * 2.0
('b', True)
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from river import compose, linear_model

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
