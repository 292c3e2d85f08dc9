"""Build River estimators and metrics from config strings, without eval or arbitrary imports.

A spec is parsed with `ast` and only a small grammar is accepted: ``module.Class`` or
``module.Class(param=literal, ...)`` steps joined by ``|``, where ``module`` is one of
`MODULES` and a parameter may itself be such a call (or a ``|`` pipeline of them), or one of
the feature types in `TYPES` (for ``compose.SelectType``).

>>> spec = "preprocessing.StandardScaler | linear_model.LogisticRegression(l2=0.001)"
>>> model = parse_model_spec(spec)
>>> list(model.steps), model["LogisticRegression"].l2
(['StandardScaler', 'LogisticRegression'], 0.001)
>>> metric = make_metric("ROCAUC")
>>> is_classifier(model), uses_proba(model, metric)
(True, True)
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import importlib
import numbers
from collections.abc import Iterable
from typing import Any

from river import base, compose, metrics, utils

# The River submodules a spec may name; nothing else is ever imported.
_MODULE_NAMES = """
    anomaly bandit base cluster compose covariance drift dummy ensemble facto feature_extraction
    feature_selection forest imblearn linear_model misc model_selection multiclass multioutput
    naive_bayes neighbors optim preprocessing proba reco rules sketch stats time_series tree
"""
MODULES = frozenset(_MODULE_NAMES.split())
# Metrics are not pipeline steps, but model_selection's meta-models require one as a parameter.
PARAM_MODULES = MODULES | {"metrics"}
_COMMON_METRICS = ("Accuracy", "ROCAUC", "LogLoss", "F1", "MAE", "RMSE", "R2")
# Types a spec may name, as compose.SelectType's arguments; bool is a number to River (and to
# Python), so numbers.Number selects booleans too, as 0/1.
TYPES: dict[str, type] = {
    "numbers.Number": numbers.Number,
    "str": str,
    "bool": bool,
    "int": int,
    "float": float,
}
# Real tables mix kinds: numbers (and booleans) are scaled, strings one-hot encoded, each by
# River's own transformers side by side; on all-numeric data this learns exactly what
# ``preprocessing.StandardScaler | linear_model.LogisticRegression`` learns.
DEFAULT_MODEL_SPEC = (
    "compose.TransformerUnion("
    "compose.SelectType(numbers.Number) | preprocessing.StandardScaler, "
    "compose.SelectType(str) | preprocessing.OneHotEncoder"
    ") | linear_model.LogisticRegression"
)


class SpecError(ValueError):
    """A model or metric spec that cannot be built; the message says what and where.

    >>> parse_model_spec("linear_modle.LogisticRegression")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pipeline.models.SpecError: unknown River module 'linear_modle' in step ... 'linear_model'?)
    """


def _parse(spec: str, what: str) -> tuple[ast.expr, str]:
    # Newlines come from YAML block scalars; outside brackets Python would reject them.
    text = spec.replace("\r", " ").replace("\n", " ").strip()
    if not text:
        raise SpecError(f"empty {what}")
    try:
        return ast.parse(text, mode="eval").body, text
    except (SyntaxError, ValueError, RecursionError) as e:
        if what == "model spec" and any(not s.strip() for s in text.split("|")):
            raise SpecError(f"empty step in model spec {spec!r}") from None
        raise SpecError(f"{what} {spec!r} is not valid: {getattr(e, 'msg', e)}") from None


def _hint(name: str, candidates: Iterable[str]) -> str:
    # A high cutoff: 'datasets' -> 'stats' would mislead more than it helps.
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.8)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _resolve(func: ast.expr, where: str, modules: frozenset[str]) -> type[base.Base]:
    dotted = ast.unparse(func)
    if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)):
        raise SpecError(
            f"{dotted!r} in {where} is not allowed: only River estimators, written module.Class"
        )
    module_name, name = func.value.id, func.attr
    if module_name not in modules:
        if hint := _hint(module_name, modules):
            raise SpecError(f"unknown River module {module_name!r} in {where}{hint}")
        allowed = ", ".join(sorted(modules))
        raise SpecError(f"{dotted!r} in {where} is not allowed: only River estimators ({allowed})")
    if name.startswith("_"):
        raise SpecError(f"{dotted!r} in {where} is not allowed: '_' names are private")
    try:
        module = importlib.import_module(f"river.{module_name}")
    except ImportError:  # the allowlist spans River versions
        raise SpecError(f"River module {module_name!r} in {where} is not installed") from None
    cls = getattr(module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, base.Base)):
        public = [n for n, v in vars(module).items() if isinstance(v, type) and n[0] != "_"]
        raise SpecError(f"unknown River class {dotted!r} in {where}{_hint(name, public)}")
    return cls


def _value(node: ast.expr, where: str, estimators: bool = True) -> Any:
    if isinstance(node, ast.Constant | ast.UnaryOp):
        with contextlib.suppress(ValueError):  # literal_eval refuses -'a', not 1, -x, ...
            return ast.literal_eval(node)
    try:
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            items = [_value(e, where, estimators) for e in node.elts]
            return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
        if isinstance(node, ast.Dict) and None not in node.keys:  # None marks ``**`` unpacking
            keys = [_value(k, where, estimators) for k in node.keys if k is not None]
            values = [_value(v, where, estimators) for v in node.values]
            return dict(zip(keys, values, strict=True))
    except TypeError as e:  # unhashable set member or dict key
        raise SpecError(f"bad value {ast.unparse(node)!r} in {where}: {e}") from None
    if estimators and isinstance(node, ast.Name | ast.Attribute) and ast.unparse(node) in TYPES:
        return TYPES[ast.unparse(node)]
    if estimators and isinstance(node, ast.Call | ast.Attribute):
        return _build(node, where)
    if estimators and isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _pipeline(node, where)
    kinds = "literals or River classes" if estimators else "literals"
    raise SpecError(f"parameter values must be {kinds}: {ast.unparse(node)!r} in {where}")


def _as_call(node: ast.expr) -> ast.Call:
    # A bare ``module.Class`` means the class with its defaults, as a step or as a parameter.
    return node if isinstance(node, ast.Call) else ast.Call(func=node, args=[], keywords=[])


def _instantiate(cls: type, call: ast.Call, where: str, estimators: bool = True) -> Any:
    if any(kw.arg is None for kw in call.keywords):
        raise SpecError(f"'**' unpacking is not allowed in {where}")
    args = [_value(a, where, estimators) for a in call.args]
    kwargs = {kw.arg: _value(kw.value, where, estimators) for kw in call.keywords if kw.arg}
    try:
        return cls(*args, **kwargs)
    except Exception as e:  # constructors raise TypeError, ValueError, AssertionError, ...
        raise SpecError(f"cannot build {ast.unparse(call)!r} in {where}: {e}") from e


def _build(node: ast.expr, where: str, modules: frozenset[str] = PARAM_MODULES) -> Any:
    call = _as_call(node)
    return _instantiate(_resolve(call.func, where, modules), call, where)


def _flatten(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _flatten(node.left) + _flatten(node.right)
    return [node]


def _pipeline(node: ast.expr, where: str | None, text: str = "") -> base.Estimator:
    # At the top level each step names itself in errors; nested, the enclosing step does.
    steps = []
    for part in _flatten(node):
        here = where or f"step {ast.get_source_segment(text, part) or ast.unparse(part)!r}"
        step = _build(part, here, MODULES)
        if not isinstance(step, base.Estimator):
            raise SpecError(f"{ast.unparse(part)!r} in {here} is not a River estimator")
        steps.append(step)
    if len(steps) == 1:
        return steps[0]
    try:
        return compose.Pipeline(*steps)
    except Exception as e:
        raise SpecError(f"cannot chain {ast.unparse(node)!r} into a pipeline: {e}") from e


def parse_model_spec(spec: str) -> base.Estimator:
    """Build a fresh, untrained River estimator from a spec.

    Steps separated by ``|`` form a `compose.Pipeline`; a single step is returned as is.

    Parameters
    ----------
    spec
        For instance ``"preprocessing.StandardScaler | linear_model.LogisticRegression(l2=0.1)"``.

    Examples
    --------

    >>> parse_model_spec("tree.HoeffdingTreeClassifier(grace_period=50)").grace_period
    50
    >>> model = parse_model_spec("linear_model.LogisticRegression(optimizer=optim.SGD(0.05))")
    >>> model.optimizer.learning_rate
    0.05
    >>> default = parse_model_spec(DEFAULT_MODEL_SPEC)
    >>> default.learn_one({"amount": 12.5, "country": "FR", "new": True}, True)
    >>> sorted(default["TransformerUnion"].transform_one({"amount": 12.5, "country": "FR"}))
    ['amount', 'country_FR']
    >>> parse_model_spec("os.system('ls')")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pipeline.models.SpecError: 'os.system' in step "os.system('ls')" is not allowed: ...
    """
    node, text = _parse(spec, "model spec")
    return _pipeline(node, None, text)


def _metric_classes() -> dict[str, type[metrics.base.Metric]]:
    # Containers and rolling wrappers need a metric to wrap; the two reports are Metric
    # subclasses whose get() raises NotImplementedError, so nothing could score on them.
    excluded = [getattr(metrics.base, "Metrics", None), getattr(utils, "Rolling", None)]
    excluded += [getattr(metrics, n, None) for n in ("ConfusionMatrix", "ClassificationReport")]
    return {
        name: cls
        for name, cls in vars(metrics).items()
        if isinstance(cls, type)
        and issubclass(cls, metrics.base.Metric)
        and cls not in excluded
        and not name.startswith("_")
    }


def make_metric(spec: str) -> metrics.base.Metric:
    """Build a fresh River metric from its class name, optionally with literal parameters.

    Examples
    --------

    >>> make_metric("MAE")
    MAE: 0.
    >>> make_metric("metrics.F1(pos_val=False)").pos_val
    False
    """
    call = _as_call(_parse(spec, "metric")[0])
    name = ast.unparse(call.func).removeprefix("metrics.")  # anything dotted is then unknown
    classes = _metric_classes()
    if name not in classes:
        close = difflib.get_close_matches(name, classes, n=3) or _COMMON_METRICS
        where = "" if name == spec.strip() else f" in {spec!r}"
        raise SpecError(f"unknown River metric {name!r}{where}: try {', '.join(close)}")
    return _instantiate(classes[name], call, f"metric {spec!r}", estimators=False)


def is_classifier(model: object) -> bool:
    """Whether the model (or the last step of a pipeline) is a River classifier.

    River 0.26 has no ``utils.inspect``: its estimator metaclass makes ``isinstance`` look
    through pipelines instead.

    >>> is_classifier(parse_model_spec("preprocessing.StandardScaler | naive_bayes.GaussianNB"))
    True
    """
    return isinstance(model, base.Classifier)


def is_regressor(model: object) -> bool:
    """Whether the model (or the last step of a pipeline) is a River regressor.

    >>> is_regressor(parse_model_spec("linear_model.LinearRegression"))
    True
    """
    return isinstance(model, base.Regressor)


def uses_proba(model: object, metric: metrics.base.Metric) -> bool:
    """Whether `evaluate.progressive_val_score` would score this pair with ``predict_proba_one``.

    >>> model = parse_model_spec("linear_model.LogisticRegression")
    >>> uses_proba(model, make_metric("LogLoss")), uses_proba(model, make_metric("Accuracy"))
    (True, False)
    """
    # Same order as River: anomaly models score first; regression metrics lack requires_labels.
    if isinstance(model, base.AnomalyFilter | base.AnomalyDetector):
        return False
    return is_classifier(model) and not getattr(metric, "requires_labels", True)


def make_drift_detector(spec: str) -> base.DriftDetector:
    """A River drift detector from ``drift.ADWIN`` or ``drift.PageHinkley(threshold=20)``.

    >>> make_drift_detector("drift.ADWIN(delta=0.01)").delta
    0.01
    """
    node, text = _parse(spec, "drift detector")
    detector = _build(node, f"drift detector {text!r}", MODULES)
    if not isinstance(detector, base.DriftDetector):
        raise SpecError(f"drift detector {text!r} is not a River drift detector (e.g. drift.ADWIN)")
    return detector
