from pipeline.config import GatingConfig
from pipeline.gating import Gating


def gate(**kw: object) -> Gating:
    cfg = {"min_labels": 3, "window": 10, "margin": 0.05, "confidence_threshold": 0.7, **kw}
    return Gating(GatingConfig(**cfg), bigger_is_better=True)  # type: ignore[arg-type]


def test_cold_until_first_label_then_shadow() -> None:
    g = gate()
    assert g.mode == "cold"
    assert not g.serves_model(0.99)
    assert g.observe(1, model=0.9, fallback=0.1, window_size=1) is None  # below min_labels
    assert g.mode == "shadow"


def test_promotion_needs_min_labels_and_margin() -> None:
    g = gate()
    for i in (1, 2):
        assert g.observe(i, model=0.9, fallback=0.1, window_size=i) is None
    assert g.observe(3, model=0.54, fallback=0.5, window_size=3) is None  # inside the margin
    decision = g.observe(4, model=0.56, fallback=0.5, window_size=4)
    assert decision is not None and decision.kind == "promotion"
    assert (decision.label_index, decision.model_metric, decision.fallback_metric) == (4, 0.56, 0.5)
    assert g.mode == "serving"


def test_hysteresis_then_demotion_and_repromotion() -> None:
    g = gate(min_labels=0)
    assert g.observe(1, 0.9, 0.5, 1) is not None
    assert g.observe(2, 0.46, 0.5, 2) is None  # worse, but within the margin: stays
    assert g.mode == "serving"
    demotion = g.observe(3, 0.44, 0.5, 3)
    assert demotion is not None and demotion.kind == "demotion"
    assert g.mode == "shadow"
    assert g.observe(4, 0.9, 0.5, 4) is not None
    assert [d.kind for d in g.decisions] == ["promotion", "demotion", "promotion"]
    assert len(g.promotions) == 2 and len(g.demotions) == 1


def test_lower_is_better_metric() -> None:
    g = Gating(GatingConfig(min_labels=0, margin=0.1), bigger_is_better=False)
    assert g.observe(1, model=0.5, fallback=0.55, window_size=1) is None  # only 0.05 better
    promoted = g.observe(2, model=0.3, fallback=0.55, window_size=2)
    assert promoted is not None and promoted.kind == "promotion"
    demoted = g.observe(3, model=0.9, fallback=0.55, window_size=3)
    assert demoted is not None and demoted.kind == "demotion"


def test_confidence_threshold_per_prediction() -> None:
    g = gate(min_labels=0)
    g.observe(1, 0.9, 0.1, 1)
    assert g.serves_model(0.7)
    assert not g.serves_model(0.69)
    assert g.serves_model(None)  # regressors have no confidence: the mode decides


def test_forced_demotion_only_when_serving() -> None:
    g = gate(min_labels=0)
    assert g.demote(1, 0.5, 0.5, "drift") is None
    g.observe(1, 0.9, 0.1, 1)
    decision = g.demote(2, 0.9, 0.1, "drift")
    assert decision is not None and decision.reason == "drift" and g.mode == "shadow"
