"""A fallback callable for the tests: ``tests.unit.rules_for_tests:big_is_true``."""

from collections.abc import Mapping
from typing import Any


def big_is_true(features: Mapping[str, Any]) -> bool | None:
    if features["size"] > 5:  # raises TypeError on a string, on purpose
        return True
    return None


def list_for_weird(features: Mapping[str, Any]) -> Any:
    """An answer no label can be (a list) for events with a ``weird`` feature: the core fails
    on it after the callable returned, where no model or callable guard catches it."""
    return [1] if "weird" in features else None
