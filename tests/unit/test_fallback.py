import pytest

from pipeline.config import FallbackConfig, Rule
from pipeline.fallback import Answer, Fallback, load_callable, rule_matches


@pytest.mark.parametrize(
    ("op", "value", "features", "expected"),
    [
        ("==", 1, {"f": 1}, True),
        ("!=", 1, {"f": 2}, True),
        ("<", 5, {"f": 4.5}, True),
        ("<=", 5, {"f": 5}, True),
        (">", 5, {"f": 5}, False),
        (">=", 5, {"f": 5}, True),
        ("in", ["a", "b"], {"f": "b"}, True),
        ("not in", ["a", "b"], {"f": "c"}, True),
        ("is null", None, {}, True),
        ("is null", None, {"f": None}, True),
        ("is not null", None, {"f": 0}, True),
        (">", 5, {}, False),  # missing feature never matches a comparison
        (">", 5, {"f": "text"}, False),  # type mismatch does not raise
    ],
)
def test_operators(op: str, value: object, features: dict[str, object], expected: bool) -> None:
    rule = Rule(feature="f", op=op, value=value, prediction=True)  # type: ignore[arg-type]
    assert rule_matches(rule, features) is expected


def test_first_match_wins_then_default() -> None:
    chain = Fallback.from_config(
        FallbackConfig(
            rules=(
                Rule(feature="a", op=">", value=0, prediction="first"),
                Rule(feature="a", op=">", value=-1, prediction="second", confidence=0.6),
            ),
            default="fallback-default",
        )
    )
    assert chain.answer({"a": 1}) == Answer("first", "heuristic", 1.0)
    assert chain.answer({"a": 0}) == Answer("second", "heuristic", 0.6)
    assert chain.answer({"a": -5}) == Answer("fallback-default", "default", None)


def test_callable_between_rules_and_default() -> None:
    chain = Fallback.from_config(
        FallbackConfig(callable="tests.unit.rules_for_tests:big_is_true", default=False)
    )
    assert chain.answer({"size": 10}) == Answer(True, "callable", None)
    assert chain.answer({"size": 1}) == Answer(False, "default", None)  # callable said None
    assert chain.answer({"size": "boom"}) == Answer(False, "default", None)  # callable raised


def test_no_answer_at_all() -> None:
    assert Fallback().answer({}) == Answer(None, "none", None)


def test_bad_callable_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"fallback.callable: cannot import module 'no_such_mod'"):
        load_callable("no_such_mod:f")
    with pytest.raises(ValueError, match="is not a callable"):
        load_callable("math:pi")
