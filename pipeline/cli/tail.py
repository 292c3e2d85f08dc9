"""`riverline tail`: the last records of a pipeline's output topics, for people."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from pipeline.cli.app import app
from pipeline.cli.common import (
    DEFAULT_CONFIG,
    BootstrapOpt,
    ConfigOpt,
    NameOpt,
    build_config,
    console,
    friendly_errors,
    kafka_bootstrap,
    print_error,
)
from pipeline.config import KafkaConfig
from pipeline.display import literal, shown

# The command's word -> the topic's field in the config.
TOPICS = {
    "predictions": "predictions",
    "dead-letters": "dead_letters",
    "review-requests": "review_requests",
}


class NoSuchTopic(RuntimeError):
    """The topic does not exist (yet): nothing has run under that name."""


def read_tail(
    kafka: KafkaConfig,
    bootstrap: str,
    topic: str,
    count: int,
    follow: Callable[[], bool],
    startup_timeout_s: float = 10.0,
) -> Iterator[tuple[int, int, Any]]:
    """``(partition, offset, value)`` of the last ``count`` records, oldest first; then, while
    ``follow()`` is true, each new record as it arrives.

    All the Kafka code of `tail` is here. Tansu answers ListOffsets wrongly, so the end of each
    partition is taken from a fetch response's high watermark, as the consumer does for lag.
    """
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    from pipeline.kafka.embedded import BrokerUnavailable

    try:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap.split(","),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=200,
            **kafka.client_options,
        )
    except KafkaError as e:
        raise BrokerUnavailable(f"cannot reach Kafka at {bootstrap}: {e}") from None
    try:
        if topic not in consumer.topics():
            raise NoSuchTopic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + startup_timeout_s
        while any(consumer.highwater(tp) is None for tp in tps) and time.monotonic() < deadline:
            consumer.poll(timeout_ms=200)
        ends = {tp: consumer.highwater(tp) or 0 for tp in tps}
        for tp in tps:  # an offset before the log's start is reset to it (earliest)
            consumer.seek(tp, max(0, ends[tp] - count))
        last: list[tuple[int, int, int, Any]] = []
        quiet_until = time.monotonic() + startup_timeout_s  # a broker gone quiet ends the wait
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            batch = consumer.poll(timeout_ms=500)
            if not batch and time.monotonic() > quiet_until:
                break
            if batch:
                quiet_until = time.monotonic() + startup_timeout_s
            for tp, records in batch.items():
                last.extend(
                    (r.timestamp, tp.partition, r.offset, r.value)
                    for r in records
                    if r.offset < ends[tp]
                )
        # Across partitions, record time orders them; a partition keeps its own order.
        for _, partition, offset, value in sorted(last)[-count:] if count else []:
            yield partition, offset, value
        for tp in tps:
            consumer.seek(tp, ends[tp])
        while follow():
            for tp, records in consumer.poll(timeout_ms=500).items():
                for r in records:
                    yield tp.partition, r.offset, r.value
    finally:
        consumer.close()


def _time(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return str(ts)
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def decoded_value(letter: dict[str, Any]) -> Any:
    """A dead letter's original value: JSON if it parses, else text, else bytes.

    >>> decoded_value({"value_b64": base64.b64encode(b'{"id": "1"}').decode()})
    {'id': '1'}
    >>> decoded_value({"value_b64": base64.b64encode(b"{oops").decode()})
    '{oops'
    >>> decoded_value({"value_b64": None}) is None
    True
    """
    raw = letter.get("value_b64")
    if raw is None:
        return None
    value = base64.b64decode(raw)
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return value
    try:
        return json.loads(text)
    except ValueError:
        return text


def format_record(kind: str, partition: int, offset: int, raw: bytes | None) -> str:
    """One record as one or two lines a person can read; what the record holds is printed,
    never obeyed by the terminal (control characters escaped).

    >>> p = b'{"id": "7", "ts": 0, "prediction": true, "source": "model", "confidence": 0.91,'
    >>> p += b' "mode": "serving", "model_version": 120}'
    >>> print(format_record("predictions", 0, 41, p))
    [0:41] 1970-01-01 00:00:00 id 7 -> True  by model (confidence 0.91), mode serving, model v120
    >>> print(format_record("predictions", 0, 1, b'{"id": "a\\\\u001b[2J"}'))
    [0:1] None id a\\x1b[2J -> None  by None, mode None, model vNone
    """
    return "\n".join(shown(line) for line in _lines(kind, partition, offset, raw))


def _lines(kind: str, partition: int, offset: int, raw: bytes | None) -> list[str]:
    where = f"[{partition}:{offset}]"
    try:
        data = json.loads(raw or b"")
    except ValueError:
        return [f"{where} {raw!r}"]
    if not isinstance(data, dict):
        return [f"{where} {data!r}"]
    if kind == "predictions":
        confidence = data.get("confidence")
        conf = f" (confidence {confidence:.2f})" if isinstance(confidence, int | float) else ""
        return [
            f"{where} {_time(data.get('ts'))} id {data.get('id')} -> {data.get('prediction')!r}  "
            f"by {data.get('source')}{conf}, mode {data.get('mode')}, "
            f"model v{data.get('model_version')}"
        ]
    if kind == "dead-letters":
        origin = f"{data.get('topic')}[{data.get('partition')}] offset {data.get('offset')}"
        value = json.dumps(decoded_value(data), default=repr, ensure_ascii=False)
        if data.get("value_truncated"):
            # Cut to fit kafka.max_message_bytes: the whole record is still at its origin.
            value += (
                f" (truncated: {len(base64.b64decode(data.get('value_b64') or ''))} of "
                f"{data.get('value_length')} bytes, sha256 {data.get('value_sha256')})"
            )
        return [
            f"{where} {_time(data.get('rejected_at'))} {data.get('reason')}: {data.get('message')}",
            f"    from {origin}: {value}",
        ]
    return [f"{where} {json.dumps(data, ensure_ascii=False)}"]


@app.command()
def tail(
    what: Annotated[str, typer.Argument(help="predictions, dead-letters or review-requests.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    name: NameOpt = None,
    bootstrap: BootstrapOpt = None,
    lines: Annotated[int, typer.Option("-n", "--lines", min=0, help="How many records.")] = 10,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Then print new records until Ctrl-C.")
    ] = False,
) -> None:
    """Print the last records of a pipeline's predictions, dead letters or review requests."""
    if what not in TOPICS:
        raise typer.BadParameter(f"one of {', '.join(TOPICS)}", param_hint="WHAT")
    with friendly_errors():
        cfg = build_config(config, name, bootstrap)
        topic = getattr(cfg.kafka.topics, TOPICS[what])
        # No stop flag: tail holds no state, so Ctrl-C may interrupt anything, a connect included.
        with kafka_bootstrap(cfg, embedded_ok=False) as servers:
            printed = 0
            try:
                for partition, offset, value in read_tail(
                    cfg.kafka, servers, topic, lines, lambda: follow
                ):
                    print(format_record(what, partition, offset, value), flush=True)
                    printed += 1
            except KeyboardInterrupt:
                raise typer.Exit(0 if follow else 130) from None  # --follow ends with Ctrl-C
            except NoSuchTopic:
                print_error(
                    f"no topic {topic}: nothing has run as pipeline {cfg.name} on {servers} "
                    "(check --name)"
                )
                raise typer.Exit(1) from None
            if not printed:
                console.print(literal(f"{topic} is empty"), highlight=False)
