"""Soak run (not a test): a paced stream with hostile records, a SIGKILL and a Redis restart.

    python benchmarks/soak.py [--minutes 30] [--rate 200] [--hostile 0.01] [--client kafka-python]

What a consumer that runs for months meets, compressed: events published at ``--rate`` per
second with the wall clock as their time, labels ``--label-delay`` events later, and about
``--hostile`` of the records replaced by one of the kinds in :data:`HOSTILE_KINDS` (too large,
too deep, huge numbers, markup and terminal escapes in text, invalid UTF-8, duplicates, labels
of the wrong type...). One ``riverline run`` consumes it from a private Redis (started here on
a free port, so restarting it touches nobody else) and the embedded broker. A third of the way
in the consumer is SIGKILLed and started again; two thirds in, Redis is restarted empty.

At the end every event record published is accounted for, by its offset: it has a prediction
(by id) or a dead letter (by origin offset). The consumer must not have stopped by itself, and
its resident set size is sampled every few seconds; the figures are printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from pipeline.kafka.embedded import EmbeddedBroker, free_port, wait_for_port

HOSTILE_KINDS = (
    "event_too_large",
    "label_too_large",
    "too_deep",
    "huge_number",
    "overflowing_number",
    "markup_text",
    "terminal_escapes_id",
    "bidi_text",
    "invalid_utf8",
    "not_json",
    "duplicate_id",
    "label_not_allowed",
    "label_wrong_type",
    "nan_literal",
    "missing_fields",
    "orphan_label",
)


def features(rng: random.Random) -> tuple[dict[str, Any], bool]:
    """A small mixed table: two informative numbers, noise, a category, a flag."""
    a, b = rng.random(), rng.random()
    x = {
        "a": round(a * 100, 3),
        "b": round(b * 10, 3),
        "noise": round(rng.gauss(0, 1), 3),
        "country": rng.choice(["FR", "IT", "DE", "NG"]),
        "new_card": rng.random() < 0.2,
    }
    return x, (a + b > 1.0) != (rng.random() < 0.05)


def event_bytes(event_id: str, ts: float, x: dict[str, Any]) -> bytes:
    return json.dumps({"id": event_id, "ts": ts, "features": x}).encode()


def label_bytes(event_id: str, ts: float, label: Any) -> bytes:
    return json.dumps({"id": event_id, "ts": ts, "label": label, "source": "ground_truth"}).encode()


def hostile(kind: str, i: int, ts: float, rng: random.Random, seen: list[str]) -> dict[str, Any]:
    """One hostile record: where it goes (events or labels), its key and value, and whether a
    label for it follows (``label``)."""
    eid = f"h{i}"
    x, y = features(rng)
    out: dict[str, Any] = {"topic": "events", "key": eid, "label": None}
    if kind == "event_too_large":
        x["blob"] = "x" * 900_000
        out["value"] = event_bytes(eid, ts, x)
    elif kind == "label_too_large":
        out["value"] = event_bytes(eid, ts, x)
        out["extra"] = (
            "labels",
            eid,
            json.dumps({"id": eid, "ts": ts, "label": y, "pad": "y" * 900_000}).encode(),
        )
    elif kind == "too_deep":
        x["deep"] = 0
        out["value"] = event_bytes(eid, ts, x).replace(b'"deep": 0', b'"deep": ' + _nest(20_000))
    elif kind == "huge_number":
        x["a"] = 1e308 if rng.random() < 0.5 else -1e308
        out["value"] = event_bytes(eid, ts, x)
        out["label"] = y
    elif kind == "overflowing_number":
        x["b"] = 1e150
        out["value"] = event_bytes(eid, ts, x)
        out["label"] = y
    elif kind == "markup_text":
        x["country"] = "[/][link=http://example.invalid]click[/link][bold]"
        out["value"] = event_bytes(eid, ts, x)
        out["label"] = y
    elif kind == "terminal_escapes_id":
        eid = f"h{i}\x1b]0;pwned\x07\x1b[2J"
        out["key"] = eid
        out["value"] = event_bytes(eid, ts, x)
        out["label"] = y
    elif kind == "bidi_text":
        x["country"] = "x5\u202egnp.exe\u202c"
        out["value"] = event_bytes(eid, ts, x)
        out["label"] = y
    elif kind == "invalid_utf8":
        out["value"] = b'{"id": "' + eid.encode() + b'", "ts": 1, "features": {"c": "\xff\xfe"}}'
    elif kind == "not_json":
        out["value"] = b"<html>not json</html>"
    elif kind == "duplicate_id":
        eid = rng.choice(seen) if seen else eid
        out["key"] = eid
        out["value"] = event_bytes(eid, ts, x)
    elif kind == "label_not_allowed":
        out["value"] = event_bytes(eid, ts, x)
        out["label"] = "unsure"
    elif kind == "label_wrong_type":
        out["value"] = event_bytes(eid, ts, x)
        out["label"] = 1
    elif kind == "nan_literal":
        out["value"] = event_bytes(eid, ts, x).replace(b'"noise": ', b'"noise": NaN, "n2": ')
        out["label"] = y
    elif kind == "missing_fields":
        out["value"] = json.dumps({"features": x}).encode()
    elif kind == "orphan_label":
        out["topic"] = "labels"
        out["value"] = label_bytes(f"never-{i}", ts, y)
    return out


def _nest(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


class Publisher(threading.Thread):
    """Paced events (wall-clock time), labels ``delay`` events later, hostile records mixed in.

    Records each event record's offset in the events topic, acknowledged by the broker.
    """

    def __init__(self, bootstrap: str, topics: dict[str, str], args: argparse.Namespace) -> None:
        super().__init__(daemon=True)
        self.topics = topics
        self.args = args
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=5,
            max_request_size=4 * 1024 * 1024,
            retries=5,
        )
        # events-topic offset -> (what it was, the id it carries or None)
        self.event_offsets: dict[int, tuple[str, str | None]] = {}
        self.published = {"events": 0, "labels": 0, "hostile": 0}
        self.hostile_by_kind: dict[str, int] = {}
        self.lock = threading.Lock()
        self.done = threading.Event()

    def _send(
        self, topic: str, key: str, value: bytes, what: str, event_id: str | None = None
    ) -> None:
        future = self.producer.send(self.topics[topic], key=key.encode(), value=value)
        self.published["events" if topic == "events" else "labels"] += 1
        if topic == "events":

            def acked(meta: Any) -> None:
                with self.lock:
                    self.event_offsets[meta.offset] = (what, event_id)

            future.add_callback(acked)

    def run(self) -> None:
        args = self.args
        rng = random.Random(args.seed)
        total = int(args.minutes * 60 * args.rate)
        pending: list[tuple[int, str, Any]] = []  # (due at event index, id, label)
        seen: list[str] = []
        started = time.monotonic()
        kinds = list(HOSTILE_KINDS)
        for i in range(total):
            due = started + i / args.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            ts = time.time()
            while pending and pending[0][0] <= i:
                _, eid, label = pending.pop(0)
                self._send("labels", eid, label_bytes(eid, ts, label), "label")
            if rng.random() < args.hostile:
                kind = kinds[self.published["hostile"] % len(kinds)]
                self.published["hostile"] += 1
                self.hostile_by_kind[kind] = self.hostile_by_kind.get(kind, 0) + 1
                rec = hostile(kind, i, ts, rng, seen)
                has_id = rec["topic"] == "events" and kind not in _NO_ID
                self._send(
                    rec["topic"], rec["key"], rec["value"], kind, rec["key"] if has_id else None
                )
                if "extra" in rec:
                    topic, key, value = rec["extra"]
                    self._send(topic, key, value, kind)
                if rec["label"] is not None:
                    pending.append((i + args.label_delay, rec["key"], rec["label"]))
                continue
            eid = f"e{i}"
            x, y = features(rng)
            self._send("events", eid, event_bytes(eid, ts, x), "event", eid)
            pending.append((i + args.label_delay, eid, y))
            if len(seen) < 10_000 and i % 7 == 0:
                seen.append(eid)
        ts = time.time()
        for _, eid, label in pending:
            self._send("labels", eid, label_bytes(eid, ts, label), "label")
        self.producer.flush()
        self.done.set()


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def start_redis(port: int, logdir: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(logdir / "redis.log"),
        ],
    )
    if not wait_for_port("127.0.0.1", port, 10):
        raise RuntimeError("redis-server did not start")
    return proc


def read_all(bootstrap: str, topic: str) -> list[Any]:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
        fetch_max_bytes=8 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    consumer.assign(parts)
    for tp in parts:
        consumer.seek(tp, 0)
    out = list(consumer)
    consumer.close()
    return out


def overrides(settings: list[str]) -> dict[str, Any]:
    """``section.field=JSON`` settings as nested config sections.

    >>> overrides(["join.ttl_events=20000", "join.seen_ids=0"])
    {'join': {'ttl_events': 20000, 'seen_ids': 0}}
    """
    out: dict[str, Any] = {}
    for setting in settings:
        path, _, value = setting.partition("=")
        section, _, field = path.partition(".")
        out.setdefault(section, {})[field] = json.loads(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--hostile", type=float, default=0.01, help="share of hostile records")
    parser.add_argument("--label-delay", type=int, default=100)
    parser.add_argument("--client", default="kafka-python")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument("--keep", type=Path, default=None, help="directory for logs and config")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=JSON",
        help="override the consumer's config, e.g. --set join.ttl_events=20000 (a shorter "
        "warm-up: the join remembers joined ids for ttl_events events)",
    )
    args = parser.parse_args()

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="riverline-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    name = f"soak-{uuid.uuid4().hex[:8]}"
    redis_port = free_port()
    redis_proc = start_redis(redis_port, workdir)
    broker = EmbeddedBroker().start()
    bootstrap = broker.bootstrap
    topics = {t: f"{name}.{t}" for t in ("events", "labels", "predictions", "dead-letters")}
    config = workdir / "soak.yaml"
    settings: dict[str, Any] = {
        "name": name,
        "kafka": {"bootstrap": bootstrap, "client": args.client},
        "redis": {"url": f"redis://127.0.0.1:{redis_port}/0", "wait_seconds": 120},
        "evaluation": {"metric": "Accuracy", "extra_metrics": ["LogLoss"]},
        "fallback": {
            "rules": [{"feature": "a", "op": ">", "value": 60, "prediction": True}],
            "default": False,
        },
        "validation": {"labels": [True, False]},
        "gating": {"min_labels": 200, "window": 500, "margin": 0.01},
        "checkpoint": {"every_seconds": 5.0},
    }
    for section, fields in overrides(args.set).items():
        settings.setdefault(section, {}).update(fields)
    config.write_text(json.dumps(settings))
    env = os.environ | {"RIVERLINE_CHECKPOINT_SECRET": uuid.uuid4().hex}
    cmd = ["riverline", "run", "--config", str(config), "--log-level", "WARNING"]
    subprocess.run(
        ["riverline", "topics", "create", "--config", str(config)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )

    def start_consumer(n: int) -> subprocess.Popen[bytes]:
        log = open(workdir / f"run-{n}.log", "wb")  # noqa: SIM115 - lives as long as the process
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)

    consumers = [start_consumer(0)]
    time.sleep(5)  # group join
    publisher = Publisher(bootstrap, topics, args)
    publisher.start()
    total_s = args.minutes * 60
    kill_at, redis_at = total_s / 3, 2 * total_s / 3
    killed = redis_restarted = False
    rss: list[tuple[float, int, float]] = []  # (seconds in, consumer number, MiB)
    unexpected_exits: list[tuple[float, int | None]] = []
    t0 = time.monotonic()
    while not publisher.done.is_set():
        time.sleep(args.sample_seconds)
        now = time.monotonic() - t0
        current = consumers[-1]
        if current.poll() is not None:
            unexpected_exits.append((now, current.returncode))
            consumers.append(start_consumer(len(consumers)))
            continue
        mib = rss_mib(current.pid)
        if mib is not None:
            rss.append((round(now, 1), len(consumers) - 1, round(mib, 1)))
        if not killed and now >= kill_at:
            killed = True
            current.send_signal(signal.SIGKILL)
            current.wait()
            consumers.append(start_consumer(len(consumers)))
        elif not redis_restarted and now >= redis_at:
            redis_restarted = True
            redis_proc.terminate()
            redis_proc.wait()
            time.sleep(3)
            redis_proc = start_redis(redis_port, workdir)
    # Drain: until every event offset is accounted for, or nothing moves for a while.
    deadline = time.monotonic() + 300
    accounted: dict[str, Any] = {}
    while time.monotonic() < deadline:
        time.sleep(10)
        accounted = account(bootstrap, topics, publisher)
        if not accounted["missing"]:
            break
    last = consumers[-1]
    still_running = last.poll() is None
    last.send_signal(signal.SIGTERM)
    try:
        exit_code: int | None = last.wait(60)
    except subprocess.TimeoutExpired:
        last.kill()
        exit_code = None
    broker.stop()
    redis_proc.terminate()
    final = [mib for t, n, mib in rss if n == len(consumers) - 1]
    warm = final[len(final) // 5 :] if final else []
    print(
        json.dumps(
            {
                "minutes": args.minutes,
                "rate": args.rate,
                "client": args.client,
                "published": publisher.published,
                "hostile_by_kind": publisher.hostile_by_kind,
                "events_accounted": accounted.get("accounted"),
                "events_missing": len(accounted.get("missing", [])),
                "missing_sample": accounted.get("missing", [])[:10],
                "dead_letters_by_reason": accounted.get("reasons"),
                "predicted_ids": accounted.get("predicted"),
                "consumer_stopped_by_itself": unexpected_exits,
                "running_at_end": still_running,
                "exit_code_on_sigterm": exit_code,
                "rss_mib_final_consumer_after_warmup": {
                    "first": warm[0] if warm else None,
                    "min": min(warm) if warm else None,
                    "max": max(warm) if warm else None,
                    "last": warm[-1] if warm else None,
                },
                "rss_samples": " ".join(
                    f"{t:.0f}s#{n}:{mib:.0f}" for t, n, mib in rss[:: max(1, len(rss) // 40)]
                ),
                "logs": str(workdir),
            },
            indent=1,
        )
    )


def account(bootstrap: str, topics: dict[str, str], publisher: Publisher) -> dict[str, Any]:
    """Each event record published: predicted (its id) or dead-lettered (its offset)?"""
    predicted: set[str] = set()
    for r in read_all(bootstrap, topics["predictions"]):
        try:
            predicted.add(json.loads(r.value)["id"])
        except (ValueError, KeyError, TypeError):
            continue
    lettered: set[int] = set()
    reasons: dict[str, int] = {}
    for r in read_all(bootstrap, topics["dead-letters"]):
        letter = json.loads(r.value)
        reasons[letter["reason"]] = reasons.get(letter["reason"], 0) + 1
        if letter.get("topic") == topics["events"]:
            lettered.add(int(letter["offset"]))
    with publisher.lock:
        offsets = dict(publisher.event_offsets)
    missing = [
        (offset, what)
        for offset, (what, event_id) in sorted(offsets.items())
        if offset not in lettered and (event_id is None or event_id not in predicted)
    ]
    return {
        "accounted": len(offsets) - len(missing),
        "missing": missing,
        "reasons": reasons,
        "predicted": len(predicted),
    }


# Hostile events whose id cannot be read: accounted for by a dead letter only.
_NO_ID = {"invalid_utf8", "not_json", "missing_fields", "too_deep", "event_too_large"}


if __name__ == "__main__":
    main()
