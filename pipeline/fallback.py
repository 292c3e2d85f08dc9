"""What serves predictions until the model has earned trust.

The chain, first answer wins: declarative rules from the config, an optional Python callable,
then the configured default. Rules are data, never evaluated code.

>>> from pipeline.config import FallbackConfig, Rule
>>> chain = Fallback.from_config(FallbackConfig(
...     rules=(Rule(feature="https", op="==", value=0.0, prediction=True, confidence=0.8),),
...     default=False,
... ))
>>> chain.answer({"https": 0.0})
Answer(prediction=True, source='heuristic', confidence=0.8)
>>> chain.answer({"https": 1.0})
Answer(prediction=False, source='default', confidence=None)
"""

from __future__ import annotations

import importlib
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.config import FallbackConfig, Rule


@dataclass(frozen=True, slots=True)
class Answer:
    prediction: Any
    source: str  # "heuristic", "callable", "default" or "none"
    confidence: float | None


def _compare(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def check(actual: Any, expected: Any) -> bool:
        if actual is None:
            return False
        try:
            return op(actual, expected)
        except TypeError:
            # A string compared with a number simply does not match: data is messy.
            return False

    return check


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": _compare(operator.lt),
    "<=": _compare(operator.le),
    ">": _compare(operator.gt),
    ">=": _compare(operator.ge),
    "in": lambda a, b: a in b if isinstance(b, list) else False,
    "not in": lambda a, b: a not in b if isinstance(b, list) else True,
    "is null": lambda a, _: a is None,
    "is not null": lambda a, _: a is not None,
}


def rule_matches(rule: Rule, features: Mapping[str, Any]) -> bool:
    """A missing feature is null.

    >>> rule_matches(Rule(feature="age", op=">=", value=18, prediction="adult"), {"age": 30})
    True
    >>> rule_matches(Rule(feature="age", op=">=", value=18, prediction="adult"), {"age": "?"})
    False
    """
    return _OPERATORS[rule.op](features.get(rule.feature), rule.value)


def load_callable(target: str) -> Callable[[Mapping[str, Any]], Any]:
    """Import ``package.module:function``; the config is trusted like code, the data is not."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"fallback.callable: cannot import module {module_name!r}: {e}") from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise ValueError(f"fallback.callable: {target!r} is not a callable")
    return function  # type: ignore[no-any-return]


class Fallback:
    """The rules, the callable, the default: tried in that order."""

    def __init__(
        self,
        rules: tuple[Rule, ...] = (),
        function: Callable[[Mapping[str, Any]], Any] | None = None,
        default: Any = None,
    ) -> None:
        self.rules = rules
        self.function = function
        self.default = default
        # Answers are immutable: the last link of the chain is built once, not per event.
        self._last = (
            Answer(default, "default", None) if default is not None else Answer(None, "none", None)
        )
        # With no rules and no callable every answer is the last link's: callers on the hot
        # path take it from here instead of calling ``answer``.
        self.constant: Answer | None = self._last if not rules and function is None else None

    @classmethod
    def from_config(cls, config: FallbackConfig) -> Fallback:
        function = load_callable(config.callable) if config.callable else None
        return cls(config.rules, function, config.default)

    def rule_for(self, features: Mapping[str, Any]) -> str | None:
        """The first rule that matches, as text (for people: why the rules said so).

        >>> from pipeline.config import Rule
        >>> Fallback((Rule(feature="age", op=">=", value=18, prediction="adult"),)).rule_for(
        ...     {"age": 30})
        'age >= 18 -> adult'
        """
        for rule in self.rules:
            if rule_matches(rule, features):
                value = "" if rule.op in ("is null", "is not null") else f" {rule.value}"
                return f"{rule.feature} {rule.op}{value} -> {rule.prediction}"
        return None

    def answer(self, features: Mapping[str, Any]) -> Answer:
        for rule in self.rules:
            if rule_matches(rule, features):
                return Answer(rule.prediction, "heuristic", rule.confidence)
        if self.function is not None:
            try:
                prediction = self.function(features)
            except Exception:
                # A buggy user callable must not stop serving: fall through to the default.
                prediction = None
            if prediction is not None:
                return Answer(prediction, "callable", None)
        return self._last
