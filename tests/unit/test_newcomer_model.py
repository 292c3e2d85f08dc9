"""The default model takes mixed tables; only a successful learn_one counts as learning."""

from __future__ import annotations

from river import datasets, evaluate

from pipeline.config import load_config
from pipeline.core import LearningCore
from pipeline.models import DEFAULT_MODEL_SPEC, make_metric, parse_model_spec
from pipeline.schemas import Event, Label

LOGREG = "preprocessing.StandardScaler | linear_model.LogisticRegression"


def test_default_spec_is_the_configs_default() -> None:
    assert load_config(None, {}, environ={}).model.spec == DEFAULT_MODEL_SPEC


def test_default_model_learns_exactly_as_scaler_logreg_on_numbers() -> None:
    def score(spec: str) -> float:
        model = parse_model_spec(spec)
        metric = make_metric("ROCAUC")
        return float(evaluate.progressive_val_score(datasets.Phishing(), model, metric).get())

    assert score(DEFAULT_MODEL_SPEC) == score(LOGREG)


def test_default_model_takes_numbers_strings_and_booleans() -> None:
    model = parse_model_spec(DEFAULT_MODEL_SPEC)
    rows = [
        ({"amount": 900.0, "country": "NG", "new_card": True}, True),
        ({"amount": 12.0, "country": "FR", "new_card": False}, False),
    ] * 20
    for x, y in rows:
        model.learn_one(x, y)
    features = model["TransformerUnion"].transform_one(rows[0][0])
    assert {"amount", "new_card", "country_NG"} <= set(features) and "country" not in features
    assert features["country_NG"] == 1 and features.get("country_FR", 0) == 0
    assert model.predict_one({"amount": 950.0, "country": "NG", "new_card": True}) is True
    assert model.predict_one({"amount": 10.0, "country": "FR", "new_card": False}) is False


def test_type_names_are_the_only_names_a_spec_may_use() -> None:
    model = parse_model_spec("compose.SelectType(str, bool) | preprocessing.OneHotEncoder")
    assert model.transform_one({"a": "x", "b": 1.0}) == {"a_x": 1}


def core(spec: str) -> LearningCore:
    config = load_config(
        None,
        {"name": "learned", "model": {"spec": spec}, "fallback": {"default": False}},
        environ={},
    )
    return LearningCore.from_config(config)


def test_a_failed_learn_one_is_not_learning() -> None:
    strict = core(LOGREG)  # StandardScaler raises on a string
    for i in range(3):
        strict.on_event(Event(id=str(i), ts=float(i), features={"x": 1.0, "city": "Lyon"}))
        strict.on_label(Label(id=str(i), ts=float(i), label=i % 2 == 0))
    report = strict.report()
    assert (report["labels"], report["model_version"]) == (3, 0)
    assert report["dead_letters"]["model_error"] >= 3

    mixed = core(DEFAULT_MODEL_SPEC)
    for i in range(3):
        outcome = mixed.on_event(Event(id=str(i), ts=float(i), features={"city": "Lyon"}))
        assert outcome.prediction is not None and outcome.prediction.pipeline == "learned"
        mixed.on_label(Label(id=str(i), ts=float(i), label=i % 2 == 0))
    assert (mixed.report()["labels"], mixed.report()["model_version"]) == (3, 3)
