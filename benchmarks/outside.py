"""Event-to-prediction latency probed from outside (issue 22): what a downstream reader sees.

    python benchmarks/latency.py --outside [--seconds 10] [--repeats 3] [--rate 1000]
        [--servers bare,riverline] [--set section.field=value ...]

On one embedded broker, each round runs every server in turn (alternating, ``--repeats``
rounds) on fresh topics, all probed the same way:

- a publisher (this process) sends events at ``--rate`` per second with the wall clock as
  their time, each label 100 events later, and notes every event's send time;
- the server under test, a process of its own:
  ``bare``: a confluent-kafka loop that reads the events topic and produces one small record
  per event, with riverline's own client settings (riverline's transport: fetch wait 5 ms,
  linger 1 ms, acks all), no riverline in between; ``bare-labels``: the same loop also
  subscribed to the labels topic (which it ignores), as riverline must be; ``bare-split``: the
  labels read by a second consumer of its own instead (one partition per fetch); ``riverline``: the
  real CLI, ``riverline run`` (StandardScaler | LogisticRegression), ``--set`` applied, and
  for ``riverline:section.field=value+...`` those settings too (e.g.
  ``riverline:ordering.serve=immediate``); ``riverline-split``: the split deployment, a
  ``riverline learner`` and a ``riverline predictor`` (which reads the events only), the
  predictor's predictions timed;
- a reader, a third process, reads the predictions topic and notes each record's arrival
  (its wall clock).

Latency is the arrival minus the event's send time, per event; the first ``--warmup`` events
are left out. Medians over the rounds of p50/p90/p99, and each server's ratio to ``bare``.

The pieces run as ``python benchmarks/outside.py bare|reader ...`` (internal).
"""

from __future__ import annotations

import json
import os
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

from pipeline.checkpointing.store import CheckpointStore
from pipeline.config import KafkaConfig, load_config
from pipeline.kafka.records import SENT_HEADER, SEQ_HEADER
from pipeline.kafka.transport import make_transport
from pipeline.state.redis_client import connect
from producers.replay import encode, event_payload, label_payload
from producers.sources import SourceRecord

SPEC = "preprocessing.StandardScaler | linear_model.LogisticRegression"
LABEL_DELAY = 100  # events
TOPICS = ("events", "labels", "predictions", "dead_letters", "review_requests")
HERE = Path(__file__).resolve()
READY = "ready"


def kafka_config(bootstrap: str) -> KafkaConfig:
    """riverline's own client settings (fetch wait, linger, acks, ...), one partition."""
    return KafkaConfig(bootstrap=bootstrap, client="confluent", partitions=1)


# -- the processes ------------------------------------------------------------------------------


def wait_assigned(consumer: Any, topics: list[str]) -> None:
    """Subscribe and poll until the group assigned every partition of ``topics``."""
    assigned: list[Any] = []
    consumer.subscribe(topics, assigned.extend, lambda _p: None)
    deadline = time.monotonic() + 60
    while {t for t, _ in assigned} != set(topics) and time.monotonic() < deadline:
        consumer.poll(100)


def bare(
    bootstrap: str,
    events: str,
    labels: str | None,
    predictions: str,
    idle_s: float,
    split: bool = False,
) -> None:
    """Read events, produce one small record per event, keyed by the event's key; nothing else.

    ``labels``: read that topic too (and drop it), in the same consumer, or (``split``) in a
    second consumer of its own, polled without waiting after each poll of the events.
    Exits after ``idle_s`` without records once something came."""
    transport = make_transport(kafka_config(bootstrap), bootstrap)
    consumer = transport.consumer(f"bare-{uuid.uuid4().hex[:8]}")
    producer = transport.producer()
    send = producer.sender(lambda error: print(f"not delivered: {error}", file=sys.stderr))
    beside = None
    if labels and split:
        beside = transport.consumer(f"bare-labels-{uuid.uuid4().hex[:8]}")
        wait_assigned(beside, [labels])
        labels = None
    wait_assigned(consumer, [events] + ([labels] if labels else []))
    print(READY, flush=True)
    last: float | None = None
    while last is None or time.monotonic() - last < idle_s:
        batches = consumer.poll(100)
        if beside is not None:
            beside.poll(0)  # read and dropped, as in the loop below
        for (topic, _), records in batches.items():
            if topic != events:
                continue  # labels are read, as riverline reads them, and not used
            for r in records:
                send(predictions, r.key, b'{"prediction":true}', 0, [], int(time.time() * 1000))
        if batches:
            last = time.monotonic()
    producer.flush(30)
    producer.close()
    consumer.close()
    if beside is not None:
        beside.close()


def reader(bootstrap: str, topic: str, expect: int, out: str, idle_s: float) -> None:
    """Note each record's arrival (wall clock, ms) by its key until ``expect`` came or the
    topic was quiet for ``idle_s``; written to ``out`` as JSON."""
    transport = make_transport(kafka_config(bootstrap), bootstrap)
    consumer = transport.consumer(f"reader-{uuid.uuid4().hex[:8]}")
    wait_assigned(consumer, [topic])
    print(READY, flush=True)
    arrived: dict[str, float] = {}
    last: float | None = None  # the idle clock starts with the first record
    deadline = time.monotonic() + 600
    while len(arrived) < expect and time.monotonic() < deadline:
        if last is not None and time.monotonic() - last >= idle_s:
            break
        batches = consumer.poll(100)
        now = time.time() * 1000.0
        for records in batches.values():
            for r in records:
                arrived.setdefault(r.key.decode(), now)  # a redone prediction: the first
        if batches:
            last = time.monotonic()
    consumer.close()
    Path(out).write_text(json.dumps(arrived))


# -- the harness --------------------------------------------------------------------------------


_SHUTTLE: list[tuple[dict[str, Any], bool]] = []


def shuttle(count: int) -> list[tuple[str, dict[str, Any], bool]]:
    """``count`` rows of River's Shuttle (cycled): id, features, label (class 1 or not)."""
    if not _SHUTTLE:
        from river import datasets

        _SHUTTLE.extend((dict(x), y == 1) for x, y in datasets.Shuttle())
    return [(str(i), *_SHUTTLE[i % len(_SHUTTLE)]) for i in range(count)]


def publish(
    bootstrap: str, events: str, labels: str, rate: float, rows: list[tuple[str, Any, bool]]
) -> list[float]:
    """Events at ``rate``/s, timed by the wall clock, each label ``LABEL_DELAY`` events later
    (sent just before the event it precedes, with that event's time); the send times (ms)."""
    producer = make_transport(kafka_config(bootstrap), bootstrap).producer()
    failed: list[Exception] = []
    send = producer.sender(failed.append)
    sent: list[float] = []
    seq = 0
    started = time.monotonic()
    for i, (key, features, _label) in enumerate(rows):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now = time.time()
        stamp = b"%d" % int(now * 1000)
        if i >= LABEL_DELAY:
            old_key, _, old_label = rows[i - LABEL_DELAY]
            record = SourceRecord(id=old_key, ts=now, features={}, label=old_label)
            send(labels, old_key.encode(), encode(label_payload(record, now)), None,
                 [(SEQ_HEADER, b"%d" % seq), (SENT_HEADER, stamp)], int(now * 1000))  # fmt: skip
            seq += 1
        payload = encode(event_payload(SourceRecord(id=key, ts=now, features=features, label=None)))
        send(events, key.encode(), payload, None,
             [(SEQ_HEADER, b"%d" % seq), (SENT_HEADER, stamp)], int(now * 1000))  # fmt: skip
        seq += 1
        sent.append(now * 1000.0)
    producer.flush(30)
    producer.close()
    if failed:
        raise RuntimeError(f"{len(failed)} records not acknowledged: {failed[0]}")
    return sent


def riverline_config(name: str, bootstrap: str, redis_url: str, overrides: dict[str, Any]) -> dict:
    raw: dict[str, Any] = {
        "name": name,
        "kafka": {
            "bootstrap": bootstrap,
            "client": "confluent",
            "partitions": 1,
            "topics": {t: f"{name}.{t}" for t in TOPICS},
        },
        "redis": {"url": redis_url},
        "model": {"spec": SPEC},
        "evaluation": {"metric": "Accuracy"},
        "checkpoint": {"secret": "bench-outside"},
    }
    for section, fields in overrides.items():
        raw.setdefault(section, {}).update(fields)
    return raw


class Process:
    """A child process whose stdout/stderr lines are watched for a marker."""

    def __init__(self, argv: list[str], marker: str, env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self.seen = threading.Event()
        self.marker = marker
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if self.marker in line:
                self.seen.set()

    def wait_marker(self, timeout: float) -> None:
        if not self.seen.wait(timeout):
            self.proc.kill()
            raise RuntimeError("no " + repr(self.marker) + ":\n" + "".join(self.lines[-40:]))

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(30)


def python(*args: str) -> list[str]:
    return [sys.executable, str(HERE), *args]


def one_run(
    server: str,
    bootstrap: str,
    redis_url: str,
    rate: float,
    seconds: float,
    warmup: int,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    """One server, probed from outside; the quantiles of arrival minus send (ms)."""
    server, _, extra = server.partition(":")
    for setting in filter(None, extra.split("+")):  # riverline:a.b=1+c.d=2, on top of --set
        path, _, raw = setting.partition("=")
        section, field = path.split(".")
        value: Any = raw if not raw.replace(".", "").isdigit() else json.loads(raw)
        overrides = overrides | {section: overrides.get(section, {}) | {field: value}}
    name = f"outside-{uuid.uuid4().hex[:8]}"
    topics = {t: f"{name}.{t}" for t in TOPICS}
    transport = make_transport(kafka_config(bootstrap), bootstrap)
    transport.ensure_topics(list(topics.values()))
    count = int(rate * seconds)
    rows = shuttle(count)
    out = tempfile.mktemp(prefix="riverline-outside-", suffix=".json")
    probe = Process(python("reader", bootstrap, topics["predictions"], str(count), out, "5"), READY)
    config_path: str | None = None
    served: Process | None = None
    learner: Process | None = None  # riverline-split's: reads labels and predictions
    try:
        probe.wait_marker(60)
        if server in ("riverline", "riverline-split"):
            raw = riverline_config(name, bootstrap, redis_url, overrides)
            fd, config_path = tempfile.mkstemp(prefix="riverline-outside-", suffix=".json")
            os.write(fd, json.dumps(raw).encode())  # YAML is a superset of JSON
            os.close(fd)
            load_config(config_path, environ={})  # a bad --set fails here, not in the child
            env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERLINE_")}

            def role(command: str) -> Process:
                argv = [str(Path(sys.executable).parent / "riverline"), command, "--config",
                        config_path or "", "--until-idle", "5", "--log-level", "INFO"]  # fmt: skip
                return Process(argv, "assigned [", env)

            if server == "riverline-split":
                # The split deployment: the predictor reads the events only; the learner reads
                # the labels and the published predictions.
                learner = role("learner")
                learner.wait_marker(120)
                served = role("predictor")
            else:
                served = role("run")
        else:
            labels = topics["labels"] if server in ("bare-labels", "bare-split") else ""
            role = "bare-split" if server == "bare-split" else "bare"
            served = Process(
                python(role, bootstrap, topics["events"], labels, topics["predictions"], "3"),
                READY,
            )
        served.wait_marker(120)
        time.sleep(1.0)  # the group settled, the first fetches out
        sent = publish(bootstrap, topics["events"], topics["labels"], rate, rows)
        code = served.wait(120)
        probe.wait(30)
        if code != 0:
            raise RuntimeError(f"{server} exited {code}:\n" + "".join(served.lines[-40:]))
        if os.environ.get("OUTSIDE_SHOW"):  # the server's own output, for a look
            print("".join(served.lines), file=sys.stderr)
        if not Path(out).exists():
            raise RuntimeError(f"no reader output; {server}:\n" + "".join(served.lines[-40:]))
        arrived = json.loads(Path(out).read_text())
    finally:
        if learner is not None:
            learner.wait(120)
        for child in (probe, served, learner):
            if child is not None and child.proc.poll() is None:
                child.proc.kill()
        Path(out).unlink(missing_ok=True)
        if config_path:
            Path(config_path).unlink(missing_ok=True)
        transport.delete_topics(list(topics.values()))
        CheckpointStore(connect(redis_url), name, None).delete_all()
    latencies = [arrived[str(i)] - sent[i] for i in range(warmup, count) if str(i) in arrived]
    result = quantiles(latencies)
    result["missing"] = count - len(arrived)
    return result


def quantiles(values: list[float]) -> dict[str, Any]:
    """p50/p90/p99 (nearest rank) and the count.

    >>> quantiles([float(i) for i in range(1, 101)])
    {'p50': 50.0, 'p90': 90.0, 'p99': 99.0, 'count': 100}
    """
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    out: dict[str, Any] = {
        f"p{q}": ordered[max(0, round(q / 100 * len(ordered)) - 1)] for q in (50, 90, 99)
    }
    out["count"] = len(ordered)
    return out


def internal(argv: list[str]) -> None:
    role, *rest = argv
    if role in ("bare", "bare-split"):
        bootstrap, events, labels, predictions, idle = rest
        bare(bootstrap, events, labels or None, predictions, float(idle), role == "bare-split")
    elif role == "reader":
        bootstrap, topic, expect, out, idle = rest
        reader(bootstrap, topic, int(expect), out, float(idle))
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    internal(sys.argv[1:])
