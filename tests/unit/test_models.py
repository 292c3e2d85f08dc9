import importlib
import itertools
from types import SimpleNamespace
from typing import Any

import pytest
from river import (
    anomaly,
    compose,
    datasets,
    ensemble,
    evaluate,
    forest,
    linear_model,
    metrics,
    model_selection,
    optim,
    preprocessing,
    tree,
)

import pipeline.models as models
from pipeline.models import (
    MODULES,
    SpecError,
    is_classifier,
    is_regressor,
    make_metric,
    parse_model_spec,
    uses_proba,
)

LOGREG = "preprocessing.StandardScaler | linear_model.LogisticRegression(l2=0.001)"
LINREG = "preprocessing.StandardScaler | linear_model.LinearRegression"
BAGGING = "ensemble.BaggingClassifier(model=tree.HoeffdingTreeClassifier(), n_models=3, seed=1)"


def test_pipeline_spec() -> None:
    model = parse_model_spec(LOGREG)
    assert isinstance(model, compose.Pipeline)
    assert list(model.steps) == ["StandardScaler", "LogisticRegression"]
    assert isinstance(model["StandardScaler"], preprocessing.StandardScaler)
    assert model["LogisticRegression"].l2 == 0.001


def test_regression_pipeline_spec() -> None:
    model = parse_model_spec(LINREG)
    assert list(model.steps) == ["StandardScaler", "LinearRegression"]
    assert isinstance(model["LinearRegression"], linear_model.LinearRegression)


def test_single_step_is_the_estimator_itself() -> None:
    model = parse_model_spec("tree.HoeffdingTreeClassifier(grace_period=50)")
    assert type(model) is tree.HoeffdingTreeClassifier
    assert model.grace_period == 50
    arf = parse_model_spec("forest.ARFClassifier(seed=1)")
    assert type(arf) is forest.ARFClassifier
    assert arf.seed == 1


def test_nested_calls_and_positional_args() -> None:
    model = parse_model_spec("linear_model.LogisticRegression(optimizer=optim.SGD(0.05))")
    assert type(model.optimizer) is optim.SGD
    assert model.optimizer.learning_rate == 0.05
    bagging = parse_model_spec(BAGGING)
    assert type(bagging) is ensemble.BaggingClassifier
    assert type(bagging.model) is tree.HoeffdingTreeClassifier
    assert (bagging.n_models, bagging.seed) == (3, 1)


def test_nested_pipelines_lists_and_metrics_as_parameters() -> None:
    bagged = parse_model_spec(
        "ensemble.BaggingClassifier("
        "model=preprocessing.StandardScaler | linear_model.LogisticRegression(), n_models=2)"
    )
    assert list(bagged.model.steps) == ["StandardScaler", "LogisticRegression"]
    greedy = parse_model_spec(
        "model_selection.GreedyRegressor("
        "[linear_model.LinearRegression(), linear_model.LinearRegression(l2=-1e-3)], metrics.MAE)"
    )
    assert type(greedy) is model_selection.GreedyRegressor
    assert [m.l2 for m in greedy.models] == [0.0, -1e-3]
    assert type(greedy.metric) is metrics.MAE


@pytest.mark.parametrize(
    "variant",
    [
        "preprocessing.StandardScaler()|linear_model.LogisticRegression(l2=0.001)",
        "  preprocessing.StandardScaler  |  linear_model.LogisticRegression( l2 = 0.001 )  ",
        "preprocessing . StandardScaler | linear_model.LogisticRegression(l2=1e-3,)",
        "preprocessing.StandardScaler\n| linear_model.LogisticRegression(\n    l2=0.001\n)\n",
        "(preprocessing.StandardScaler) | (linear_model.LogisticRegression(l2=0.001))",
    ],
)
def test_spacing_and_parentheses_do_not_matter(variant: str) -> None:
    assert parse_model_spec(variant)._get_params() == parse_model_spec(LOGREG)._get_params()


def test_a_pipe_inside_a_string_is_not_a_step_separator() -> None:
    model = parse_model_spec(
        "feature_extraction.BagOfWords(tokenizer_pattern='a|b') | naive_bayes.MultinomialNB"
    )
    assert list(model.steps) == ["BagOfWords", "MultinomialNB"]
    assert model["BagOfWords"].tokenizer_pattern == "a|b"


@pytest.mark.parametrize(
    "spec",
    [
        LOGREG,
        "tree.HoeffdingTreeClassifier(grace_period=50)",
        "forest.ARFClassifier(seed=1)",
        BAGGING,
    ],
)
def test_classifiers_come_untrained(spec: str) -> None:
    proba = parse_model_spec(spec).predict_proba_one({"x": 1.0})
    assert set(proba.values()) <= {0.5}  # nothing learned: no class yet, or a coin flip


def test_regressors_come_untrained() -> None:
    assert parse_model_spec(LINREG).predict_one({"x": 1.0}) == 0.0


def test_each_parse_builds_a_fresh_model() -> None:
    a, b = parse_model_spec(BAGGING), parse_model_spec(BAGGING)
    assert a is not b and a.model is not b.model
    a, b = parse_model_spec(LOGREG), parse_model_spec(LOGREG)
    a.learn_one({"x": 1.0}, True)
    assert a["LogisticRegression"].weights and not b["LogisticRegression"].weights


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("linear_modle.LogisticRegression", "unknown River module 'linear_modle'"),
        ("linear_model.LogisticRegresion", "'linear_model.LogisticRegresion'"),
        ("os.system('ls')", "'os.system' in step \"os.system('ls')\" is not allowed"),
        ("datasets.Phishing", "'datasets.Phishing'"),
        ("metrics.Accuracy", "'metrics.Accuracy'"),  # a metric, not a step
        ("__import__('os')", "'__import__'"),
        ("LogisticRegression", "'LogisticRegression'"),
        ("tree.splitter.GaussianSplitter", "'tree.splitter.GaussianSplitter'"),
        ("linear_model._private", "'linear_model._private'"),
        ("linear_model.__class__", "'linear_model.__class__'"),
        ("linear_model.np", "'linear_model.np'"),
        ("optim.SGD", "'optim.SGD' in step 'optim.SGD' is not a River estimator"),
        ("linear_model.LogisticRegression(l2=x)", "parameter values must be literals"),
        ("linear_model.LogisticRegression(l2=x)", "'x'"),
        ("linear_model.LogisticRegression(l2=1+1)", "'1 + 1'"),
        ("linear_model.LogisticRegression(l2=-x)", "'-x'"),
        ("linear_model.LogisticRegression(l2=lambda: 1)", "'lambda: 1'"),
        ("linear_model.LogisticRegression(l2=(lambda: 1)())", "'lambda: 1'"),
        ("linear_model.LogisticRegression(l2=[1][0])", "'[1][0]'"),
        ("linear_model.LogisticRegression(l2=[x for x in [1]])", "'[x for x in [1]]'"),
        ("linear_model.LogisticRegression(l2='a'.upper())", "\"'a'.upper\""),
        ("linear_model.LogisticRegression(l2=os.environ)", "'os.environ'"),
        ("linear_model.LogisticRegression(**{'l2': 1})", "'**'"),
        ("linear_model.LogisticRegression(l2={[1]: 2})", "'{[1]: 2}'"),
        ("linear_model.LogisticRegression(no_such_param=1)", "no_such_param"),
        ("linear_model.LogisticRegression(no_such_param=1)", "'linear_model.LogisticRegression"),
        ("ensemble.BaggingClassifier(model=tree.HoeffdingTree())", "'tree.HoeffdingTree'"),
        ("linear_model.LogisticRegression()[0]", "'linear_model.LogisticRegression()[0]'"),
        ("linear_model.LogisticRegression(", "is not valid"),
        ("", "empty model spec"),
        ("   ", "empty model spec"),
        ("linear_model.LogisticRegression |", "empty step"),
        ("| linear_model.LogisticRegression", "empty step"),
        ("preprocessing.StandardScaler || linear_model.LogisticRegression", "empty step"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, named: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_model_spec(spec)
    assert named in str(info.value)


def test_errors_name_the_step_they_are_in() -> None:
    with pytest.raises(SpecError, match=r"in step 'linear_model.LogisticRegression\(l2=x\)'"):
        parse_model_spec("preprocessing.StandardScaler | linear_model.LogisticRegression(l2=x)")


def test_typos_get_a_suggestion() -> None:
    with pytest.raises(SpecError, match="did you mean 'linear_model'"):
        parse_model_spec("linear_modle.LogisticRegression")
    with pytest.raises(SpecError, match="did you mean 'LogisticRegression'"):
        parse_model_spec("linear_model.LogisticRegresion")


def test_only_river_modules_are_ever_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    imported: list[str] = []

    def spy(name: str) -> Any:
        imported.append(name)
        return importlib.import_module(name)

    monkeypatch.setattr(models, "importlib", SimpleNamespace(import_module=spy))
    for spec in ["os.system('ls')", "subprocess.run", "__import__('os')", "river.base.Base"]:
        with pytest.raises(SpecError):
            parse_model_spec(spec)
    assert imported == []
    parse_model_spec(LOGREG)
    assert imported == ["river.preprocessing", "river.linear_model"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_allowed_module_exists_in_this_river(module: str) -> None:
    importlib.import_module(f"river.{module}")


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("Accuracy", metrics.Accuracy),
        ("ROCAUC", metrics.ROCAUC),
        ("LogLoss", metrics.LogLoss),
        ("MAE", metrics.MAE),
        ("RMSE", metrics.RMSE),
        ("F1", metrics.F1),
        ("MacroF1", metrics.MacroF1),
        ("R2", metrics.R2),
        ("metrics.ROCAUC", metrics.ROCAUC),
        (" metrics.MAE() ", metrics.MAE),
    ],
)
def test_metric_names(spec: str, kind: type) -> None:
    assert type(make_metric(spec)) is kind


def test_metric_parameters() -> None:
    assert make_metric("F1(pos_val=False)").pos_val is False
    assert make_metric("metrics.FBeta(2)").beta == 2
    assert make_metric("RollingROCAUC(window_size=100)").window_size == 100
    assert make_metric("ROCAUC") is not make_metric("ROCAUC")


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("Accuracyy", "'Accuracyy'"),
        ("mae", "'mae'"),
        ("Rolling", "'Rolling'"),
        ("Metrics", "'Metrics'"),
        ("base.Metrics", "'base.Metrics'"),
        ("metrics.base.Metrics", "'base.Metrics'"),
        ("ConfusionMatrix", "'ConfusionMatrix'"),
        ("os.system", "'os.system'"),
        ("F1(pos_val=x)", "parameter values must be literals: 'x'"),
        ("F1(pos_val=linear_model.LogisticRegression())", "'linear_model.LogisticRegression()'"),
        ("MAE(foo=1)", "foo"),
        ("", "empty metric"),
    ],
)
def test_bad_metrics(spec: str, named: str) -> None:
    with pytest.raises(SpecError) as info:
        make_metric(spec)
    assert named in str(info.value)


def test_unknown_metrics_list_valid_names() -> None:
    with pytest.raises(SpecError, match="try Accuracy"):
        make_metric("Accuracyy")
    with pytest.raises(SpecError, match="Accuracy, ROCAUC, LogLoss"):
        make_metric("nonsense")


def test_task_helpers() -> None:
    logreg, linreg = parse_model_spec(LOGREG), parse_model_spec(LINREG)
    assert is_classifier(logreg) and not is_regressor(logreg)
    assert is_regressor(linreg) and not is_classifier(linreg)
    assert is_classifier(parse_model_spec(BAGGING))
    assert not is_classifier(preprocessing.StandardScaler())
    assert uses_proba(logreg, make_metric("ROCAUC"))
    assert uses_proba(logreg, make_metric("LogLoss"))
    assert not uses_proba(logreg, make_metric("Accuracy"))
    assert not uses_proba(linreg, make_metric("MAE"))
    assert not uses_proba(preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(), metrics.ROCAUC())


@pytest.mark.parametrize(
    ("spec", "metric"),
    [(LOGREG, "ROCAUC"), (LOGREG, "Accuracy"), (BAGGING, "LogLoss"), (LINREG, "MAE")],
)
def test_uses_proba_matches_progressive_val_score(spec: str, metric: str) -> None:
    model, called = parse_model_spec(spec), set()

    def spy(method: str) -> Any:
        original = getattr(model, method)

        def recorded(x: dict, **kwargs: Any) -> Any:
            called.add(method)
            return original(x, **kwargs)

        return recorded

    # River binds the predict method once per run, so instance attributes intercept it.
    for method in ("predict_one", "predict_proba_one"):
        setattr(model, method, spy(method))
    dataset = datasets.Phishing() if is_classifier(model) else datasets.TrumpApproval()
    evaluate.progressive_val_score(itertools.islice(dataset, 20), model, make_metric(metric))
    expected = "predict_proba_one" if uses_proba(model, make_metric(metric)) else "predict_one"
    assert called == {expected}


def test_parsed_pipeline_scores_like_a_hand_built_one() -> None:
    parsed = evaluate.progressive_val_score(
        datasets.Phishing(),
        parse_model_spec("preprocessing.StandardScaler | linear_model.LogisticRegression"),
        metrics.ROCAUC(),
    )
    by_hand = evaluate.progressive_val_score(
        datasets.Phishing(),
        preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        metrics.ROCAUC(),
    )
    assert parsed.get() == by_hand.get()
