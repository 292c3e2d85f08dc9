"""Topic names derive from the pipeline's name unless the config sets them."""

from pathlib import Path

from pipeline.config import default_topics, load_config


def test_topics_default_to_the_pipeline_name() -> None:
    topics = load_config(None, {"name": "fraud"}, environ={}).kafka.topics
    assert topics.model_dump() == {
        "events": "fraud.events",
        "labels": "fraud.labels",
        "predictions": "fraud.predictions",
        "dead_letters": "fraud.dead-letters",
        "review_requests": "fraud.review-requests",
    }
    assert topics.model_dump() == default_topics("fraud")


def test_explicit_topic_names_win_from_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: a\nkafka:\n  topics:\n    events: shared-events\n")
    env = {"RIVERLINE_KAFKA__TOPICS__PREDICTIONS": "out"}
    topics = load_config(path, {"name": "b"}, environ=env).kafka.topics
    found = (topics.events, topics.predictions, topics.labels)
    assert found == ("shared-events", "out", "b.labels")


def test_shipped_configs_do_not_pin_shared_topic_names() -> None:
    configs = Path(__file__).resolve().parents[2] / "configs"
    for path in configs.glob("*.yaml"):
        cfg = load_config(path, environ={})
        assert cfg.kafka.topics.model_dump() == default_topics(cfg.name), path
