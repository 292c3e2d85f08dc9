"""Provenance: digests that follow the settings and never the secrets; the serving section."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.provenance import (
    PROVENANCE_KEYS,
    config_digest,
    effective_config,
    fallback_digest,
    provenance,
    provenance_of,
)


def cfg(**overrides: Any) -> Any:
    return load_config(None, {"name": "prov", **overrides}, environ={})


def test_the_config_digest_follows_settings_not_secrets() -> None:
    base = config_digest(cfg())
    assert config_digest(cfg()) == base
    assert config_digest(cfg(gating={"min_labels": 7})) != base
    assert config_digest(cfg(model={"spec": "tree.HoeffdingTreeClassifier"})) != base
    assert config_digest(cfg(checkpoint={"secret": "a"})) == base
    with_password = cfg(redis={"url": "redis://:hunter2@127.0.0.1:6379/0"})
    assert config_digest(with_password) == base
    assert "hunter2" not in str(effective_config(with_password))
    kafka = {"client_options": {"sasl_plain_password": "hunter2", "sasl.jaas.config": "x pw"}}
    assert config_digest(cfg(kafka=kafka)) == base
    assert "hunter2" not in str(effective_config(cfg(kafka=kafka)))
    assert config_digest(cfg(kafka={"client_options": {"security_protocol": "SSL"}})) != base


def test_the_fallback_digest_follows_only_the_fallback() -> None:
    base = fallback_digest(cfg(fallback={"default": False}))
    assert fallback_digest(cfg(fallback={"default": False}, gating={"min_labels": 3})) == base
    rule = {"feature": "x", "op": ">", "value": 1.0, "prediction": True}
    assert fallback_digest(cfg(fallback={"default": False, "rules": [rule]})) != base


def test_provenance_is_what_checkpoint_meta_carries() -> None:
    config = cfg()
    made_of = provenance(config, {("prov.labels", 1): 9, ("prov.events", 0): 12}, created_at=5.0)
    assert tuple(made_of) == PROVENANCE_KEYS
    assert made_of["offsets"] == {"prov.events[0]": 12, "prov.labels[1]": 9}
    assert made_of["riverline"] == "0.1.0" and made_of["metric"] == "Accuracy"
    meta = {"reason": "periodic", "labels": 3}
    meta.update(made_of)  # as the consumer's _checkpoint_meta does
    assert provenance_of(meta) == made_of
    assert provenance_of({"reason": "old checkpoint"}) == {}


def test_serving_section_defaults_and_errors() -> None:
    serving = cfg().serving
    assert (serving.every_labels, serving.every_seconds, serving.keep, serving.poll_seconds) == (
        500,
        10.0,
        10,
        2.0,
    )
    with pytest.raises(ConfigError) as bad:
        cfg(serving={"every_labels": 0, "poll_seconds": -1, "nope": 1})
    message = str(bad.value)
    for field in ("serving.every_labels", "serving.poll_seconds", "serving.nope"):
        assert field in message
    env = {"RIVERLINE_SERVING__KEEP": "3"}
    assert load_config(None, {}, environ=env).serving.keep == 3
