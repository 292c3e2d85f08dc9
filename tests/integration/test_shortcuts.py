"""The private-API shortcuts' fallback: on a library version they were not checked against, the
pipeline takes the public API, says so once, and publishes and learns exactly the same."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from pipeline import shortcuts
from tests.integration.helpers import consume, learning_state, publish, read_topic

pytestmark = pytest.mark.integration

SOURCE = "river:Phishing"
SETTINGS = {
    "model": {"spec": "preprocessing.StandardScaler | linear_model.LogisticRegression"},
    "evaluation": {"metric": "Accuracy"},
    "fallback": {"default": False},
    # Two partitions: the bulk sender and the consumer's outputs each hold two open batches.
    "kafka": {"partitions": 2},
}
LIBRARIES = sorted({library for library, _ in shortcuts.CHECKED.values()})


def run(cfg: Any) -> tuple[dict[str, Any], dict[str, list[tuple[Any, ...]]]]:
    """Replay the source into ``cfg``'s topics, consume it; the report and every topic's records
    (key, value, headers) per partition in offset order."""
    publish(cfg, SOURCE, "10")
    report = consume(cfg, until_idle=5.0)
    assert cfg.kafka.bootstrap is not None
    topics = cfg.kafka.topics
    written = {}
    for role in ("events", "labels", "predictions"):
        records = read_topic(cfg.kafka.bootstrap, getattr(topics, role))
        records.sort(key=lambda r: (r.partition, r.offset))
        # The replay's sent_ms header is the wall clock, a prediction names its pipeline: not
        # outputs to compare.
        name = f'"pipeline":"{cfg.name}"'.encode()
        written[role] = [
            (
                r.partition,
                r.key,
                r.value.replace(name, b'"pipeline":"-"'),
                [h for h in r.headers if h[0] != "sent_ms"],
            )
            for r in records
        ]
    return report, written


@pytest.mark.parametrize("library", LIBRARIES)
def test_another_version_falls_back_to_the_public_api_with_the_same_outputs(
    library: str,
    make_config: Any,
    pipeline_name: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mine = sorted(name for name, (lib, _) in shortcuts.CHECKED.items() if lib == library)
    found = shortcuts.installed_version(library)
    # Otherwise both runs would take the public path and this test could not fail.
    assert all(found in shortcuts.CHECKED[name][1] for name in mine), (
        f"{library} {found} is not a version the shortcuts {mine} were checked against: measure "
        "them on it (benchmarks/shortcuts.py), run their tests, and add it to shortcuts.CHECKED"
    )
    monkeypatch.setattr(shortcuts, "_reported", set())
    caplog.set_level(logging.WARNING, logger="pipeline.shortcuts")

    report_on, written_on = run(make_config(SETTINGS, name=f"{pipeline_name}-on"))
    assert not [r for r in caplog.records if r.name == "pipeline.shortcuts"]

    real = shortcuts.installed_version
    monkeypatch.setattr(
        shortcuts, "installed_version", lambda lib: "0.0.1" if lib == library else real(lib)
    )
    report_off, written_off = run(make_config(SETTINGS, name=f"{pipeline_name}-off"))
    said = [r.getMessage() for r in caplog.records if r.name == "pipeline.shortcuts"]
    # One line per shortcut asked (one may stand behind another), however many clients and
    # cores the run built.
    names = [line.split()[1] for line in said]
    assert names and len(set(names)) == len(names) and set(names) <= set(mine), said
    assert all(f"{library} 0.0.1 is not a version it was checked against" in s for s in said)

    assert report_on["events"] == report_off["events"] == 1250
    assert learning_state(report_on) == learning_state(report_off)
    assert len(written_on["predictions"]) == 1250
    assert written_on == written_off
