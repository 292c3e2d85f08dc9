"""A fallback callable for the tests: ``tests.unit.rules_for_tests:big_is_true``."""

from collections.abc import Mapping
from typing import Any


def big_is_true(features: Mapping[str, Any]) -> bool | None:
    if features["size"] > 5:  # raises TypeError on a string, on purpose
        return True
    return None
