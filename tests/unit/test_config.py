from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def test_demo_config_loads() -> None:
    cfg = load_config(REPO / "configs" / "demo.yaml", environ={})
    assert cfg.name == "demo"
    assert cfg.evaluation.metric == "ROCAUC"
    assert cfg.fallback.rules[0].feature == "popup_window"


def test_precedence_file_env_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: from-file\ngating: {min_labels: 7, window: 30}\n")
    env = {
        "RIVERLINE_GATING__MIN_LABELS": "9",
        "RIVERLINE_KAFKA_BOOTSTRAP": "broker:9092",
        "RIVERLINE_REDIS_URL": "redis://r:6379/1",
        "RIVERLINE_CHECKPOINT_SECRET": "12345",
        "RIVERLINE_UNRELATED": "ignored",
    }
    cfg = load_config(path, {"gating": {"window": 40}, "name": None}, environ=env)
    assert cfg.name == "from-file"  # None overrides (unset flags) do not win
    assert cfg.gating.min_labels == 9  # env over file
    assert cfg.gating.window == 40  # flags over file
    assert cfg.kafka.bootstrap == "broker:9092"
    assert cfg.redis.url == "redis://r:6379/1"
    assert cfg.checkpoint.secret_bytes() == b"12345"  # stays a string
    cfg2 = load_config(path, {"gating": {"min_labels": 1}}, environ=env)
    assert cfg2.gating.min_labels == 1  # flags over env


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"gating": {"window": 0}}, "gating.window"),
        ({"gating": {"margin": "lots"}}, "gating.margin"),
        ({"gating": {"confidence_threshold": 1.5}}, "gating.confidence_threshold"),
        ({"kafka": {"partitions": 0}}, "kafka.partitions"),
        ({"kafka": {"topics": {"evnts": "x"}}}, "kafka.topics.evnts"),
        ({"redis": {"url": "http://x"}}, "redis.url"),
        ({"model": {"spec": "linear_modle.LogisticRegression"}}, "model.spec"),
        ({"evaluation": {"metric": "Accuracyy"}}, "evaluation.metric"),
        (
            {"fallback": {"rules": [{"feature": "a", "op": "~", "prediction": 1}]}},
            "fallback.rules.0.op",
        ),
        ({"fallback": {"callable": "not a callable"}}, "fallback.callable"),
        ({"name": "has space"}, "name"),
        ({"unknown_section": {"a": 1}}, "unknown_section"),
    ],
)
def test_bad_values_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides, environ={})
    assert f"  {field}:" in str(info.value)


def test_bad_env_value_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"gating\.min_labels"):
        load_config(None, environ={"RIVERLINE_GATING__MIN_LABELS": "many"})


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(listy)


@pytest.mark.parametrize(
    ("overrides", "field", "suggestion"),
    [
        ({"gatng": {"window": 5}}, "gatng", "gating"),
        ({"gating": {"min_label": 5}}, "gating.min_label", "min_labels"),
        ({"kafka": {"topics": {"evnts": "x"}}}, "kafka.topics.evnts", "events"),
        (
            {"fallback": {"rules": [{"feature": "a", "op": "==", "prediction": 1, "confid": 0}]}},
            "fallback.rules.0.confid",
            "confidence",
        ),
    ],
)
def test_a_misspelt_field_gets_a_suggestion(
    overrides: dict[str, object], field: str, suggestion: str
) -> None:
    """The loader every role uses says which field was meant, at the level of the typo."""
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides, environ={})
    assert f"  {field}: unknown field, did you mean `{suggestion}`?" in str(info.value)


def test_an_unknown_field_with_no_close_match_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {"drift": {"zzzz": 1}}, environ={})
    assert "  drift.zzzz: unknown field; fields here: `demote`, `detector`" in str(info.value)
