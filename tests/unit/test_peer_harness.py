"""The Quix peer harness (benchmarks/peer.py) runs riverline with the settings it names."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from pipeline.config import load_config

HARNESS = Path(__file__).resolve().parents[2] / "benchmarks" / "peer.py"


def harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("peer_harness", HARNESS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_variants_reach_the_config() -> None:
    peer = harness()

    def loaded(app: str):  # type: ignore[no-untyped-def]
        raw = peer.settings("p", "127.0.0.1:9092", "redis://127.0.0.1:6379/0", app)
        return load_config(None, raw, environ={})

    default, sparse = loaded("riverline"), loaded("riverline-sparse")
    defaults = load_config(None, {"checkpoint": {"insecure": True}}, environ={}).checkpoint
    assert default.checkpoint.every_labels == defaults.every_labels
    assert default.checkpoint.every_seconds == defaults.every_seconds
    assert sparse.checkpoint.every_labels >= 1_000_000 and sparse.checkpoint.every_seconds >= 1e5
    assert default.kafka.topics.predictions == "p.predictions"
    varied = loaded("riverline:kafka.linger_ms=5+checkpoint.every_seconds=2.5")
    assert varied.kafka.linger_ms == 5
    assert varied.checkpoint.every_seconds == 2.5
    assert varied.checkpoint.every_labels == defaults.every_labels
