"""Hostile text in event data, as people meet it: the console scripts print it, never obey it.

One pipeline run over events whose ids, feature names and slice attribute hold Rich markup,
terminal escapes and bidi controls; then `status`, `status --explain`, `tail` and the terminal
reviewer print them. None may crash, turn data into markup (a link, a style) or pass a control
character to the terminal.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from pipeline.config import RiverlineConfig
from producers.replay import replay
from producers.schedule import parse_delay
from producers.sources import SourceOptions
from tests.conftest import build_test_config, delete_pipelines
from tests.integration.cli import cli_env, riverline, riverline_all
from tests.integration.helpers import consume, write_config
from tests.integration.review_support import make_request, publish_requests

pytestmark = pytest.mark.integration

# An OSC title change, a bell and a screen clear: what an attacker's id would do to a terminal.
ESCAPES = "evil\x1b]0;pwned\x07\x1b[2J"
C1 = "csi\x9b2J"  # the 8-bit CSI some terminals obey too
BIDI = "x5\u202egnp.exe\u202c"
CLOSE = "[/]"  # a closing tag with nothing open: Rich raises MarkupError
LINK = "[link=https://evil.example]click[/link]"
EMOJI = ":warning:"
HOSTILE_IDS = (ESCAPES, C1, BIDI, CLOSE, LINK)


def _no_control(text: str) -> None:
    """Nothing a terminal would act on: C0 (but line ends), DEL, C1, bidi overrides."""
    bad = [c for c in text if (ord(c) < 32 and c not in "\n") or 0x7F <= ord(c) <= 0x9F]
    bad += [c for c in text if c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"]
    assert not bad, (bad, text)


@pytest.fixture(scope="module")
def hostile_run(backends: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One run: 200 events, five with hostile ids, a hostile feature name and slice values."""
    tmp = tmp_path_factory.mktemp("hostile")
    name = f"test-hostile-{random.getrandbits(32):08x}"
    cfg = build_test_config(
        backends,
        name,
        {
            "fallback": {"default": False},
            "gating": {"min_labels": 20},
            "telemetry": {"status_every_seconds": 0.2},
            "evaluation": {"metric": "Accuracy", "slice_by": "group"},
        },
    )
    rng = random.Random(1)
    source = tmp / "hostile.jsonl"
    with source.open("w") as f:
        for i in range(200):
            x = rng.random()
            rid = HOSTILE_IDS[i // 40] if i % 40 == 7 else str(i)
            group = (CLOSE, LINK, ESCAPES)[i % 3]
            row = {"id": rid, "label": x > 0.5, "group": group, "x": x, CLOSE: 1 - x}
            f.write(json.dumps(row) + "\n")
    assert cfg.kafka.bootstrap is not None
    options = SourceOptions(ts_column=None, attribute_columns=("group",))
    replay(cfg, cfg.kafka.bootstrap, str(source), parse_delay("5"), options=options)
    producer = KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap)
    producer.send(cfg.kafka.topics.events, value=f"{ESCAPES} {LINK} {C1}".encode())
    producer.flush()
    producer.close()
    consume(cfg)
    config_file = write_config(cfg, tmp / "hostile.yaml")
    yield cfg, config_file
    delete_pipelines(backends, {name})


def _env(cfg: RiverlineConfig) -> dict[str, str]:
    assert cfg.kafka.bootstrap is not None
    return cli_env(RIVERLINE_KAFKA_BOOTSTRAP=cfg.kafka.bootstrap)


def test_status_prints_hostile_slices_and_feature_names_as_text(hostile_run: Any) -> None:
    cfg, config_file = hostile_run
    status, explained = riverline_all(
        [
            ["status", "--config", str(config_file)],
            ["status", "--config", str(config_file), "--explain"],
        ],
        _env(cfg),
    )
    for done in (status, explained):
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        _no_control(done.stdout)
        assert f"slice group={CLOSE} " in done.stdout
        assert f"slice group={LINK} " in done.stdout
        assert "slice group=evil\\x1b]0;pwned\\x07\\x1b[2J" in done.stdout
    assert f"│ {CLOSE} " in explained.stdout  # the feature's weight


def test_terminal_reviewer_shows_hostile_requests_as_text(
    make_config: Any, backends: Any, tmp_path: Path
) -> None:
    """A request whose text is markup used to raise MarkupError, again on every restart."""
    cfg = make_config()
    request = make_request(cfg, CLOSE).model_copy(
        update={
            "features": {"a": CLOSE, "b": LINK, "c": ESCAPES, "d": EMOJI, "e": BIDI, C1: 1.0},
            "attributes": {"country": CLOSE},
            "classes": [CLOSE, "[bold]ok[/bold]"],
        }
    )
    publish_requests(cfg, [request])
    config_file = write_config(cfg, tmp_path / "review.yaml")
    env = cli_env(RIVERLINE_KAFKA_BOOTSTRAP=backends.kafka, RIVERLINE_REDIS_URL=backends.redis)
    args = ["review", "--config", str(config_file), "--reviewer", "tess", "--exit-when-empty"]
    done = riverline(args, env, timeout=120)
    # (the input is empty, so `riverline` reads EOF at the prompt and stops)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    out = done.stdout
    _no_control(out)
    assert f"request {CLOSE}" in out
    assert LINK in out and EMOJI in out
    assert "evil\\x1b]0;pwned\\x07\\x1b[2J" in out
    assert "x5\\u202egnp.exe\\u202c" in out
    assert "csi\\x9b2J" in out
    assert f"1={CLOSE}  2=[bold]ok[/bold]" in out


def test_tail_prints_control_characters_escaped(hostile_run: Any) -> None:
    cfg, config_file = hostile_run
    predictions, letters = riverline_all(
        [
            ["tail", "predictions", "--config", str(config_file), "-n", "300"],
            ["tail", "dead-letters", "--config", str(config_file)],
        ],
        _env(cfg),
    )
    for done in (predictions, letters):
        assert done.returncode == 0, done.stderr
        _no_control(done.stdout)
    out = predictions.stdout
    assert "id evil\\x1b]0;pwned\\x07\\x1b[2J -> " in out
    assert "id csi\\x9b2J -> " in out
    assert "id x5\\u202egnp.exe\\u202c -> " in out
    assert f"id {LINK} -> " in out
    assert "\\x1b]0;pwned" in letters.stdout or "\\u001b]0;pwned" in letters.stdout
