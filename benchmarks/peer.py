"""riverline against the Quix Streams peer on the same job (issue 22; not a test).

    pip install -r benchmarks/requirements-peer.txt
    python benchmarks/peer.py [--repeats 3] [--events 40000] [--delay 100]
        [--apps riverline,riverline-sparse,quix] [--quix-guarantee at-least-once]
        [--baseline APP] [--json out.json]

One embedded broker for the whole run. Per run and per app, fresh topics: River's Shuttle
(cycled to ``--events``) replayed by ``producers.replay.publish`` into the events and labels
topics, labels ``--delay`` events late, every record acknowledged before the app starts. Then
the app starts as its own process on that backlog:

- ``riverline``: the real CLI, ``riverline run -c <config>``: StandardScaler |
  LogisticRegression, checkpoints at the defaults (every 5 s or 50,000 labels), fallback,
  gating, evaluation, dead letters, exactly-once;
- ``riverline-sparse``: the same with checkpoints off but for the one on stop: how much of the
  time the checkpoints take (``--baseline riverline-sparse`` prints each app's ratio to it);
- ``riverline:KEY=VALUE[+KEY=VALUE]``: riverline with settings of its config changed, e.g.
  ``riverline:kafka.linger_ms=5`` (values read as YAML);
- ``quix``: ``benchmarks/quix_peer.py`` (Quix Streams, pinned in requirements-peer.txt).

Both are timed the same way, from outside: a reader in this process (a confluent-kafka
consumer, fetch wait 5 ms) follows the predictions topic and notes the wall time each record
arrives; the rate is ``(events - 1) / (last arrival - first arrival)``: no process start, no
group join, no state restore, the same fetch lag at both ends. The app is stopped (SIGTERM)
once every prediction has arrived; its CPU time (user + system, start-up included) is read
from the process's resource usage. The apps alternate within each repeat (the order rotates),
so a busy neighbour slows a round's runs alike; the figures are medians, and the ratio is
riverline's median over Quix's.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import TopicPartition
from river import datasets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.checkpointing.store import CheckpointStore
from pipeline.config import RiverlineConfig, load_config
from pipeline.kafka.embedded import EmbeddedBroker
from pipeline.kafka.transport import make_transport
from pipeline.state.redis_client import connect, resolve_redis_url
from producers.replay import publish
from producers.schedule import LabelDelay, schedule
from producers.sources import SourceRecord

ROOT = Path(__file__).resolve().parents[1]
SPEC = "preprocessing.StandardScaler | linear_model.LogisticRegression"
TOPICS = ("events", "labels", "predictions", "dead_letters", "review_requests")
APPS = ("riverline", "riverline-sparse", "quix")


def records(n: int) -> list[SourceRecord]:
    base = list(datasets.Shuttle())
    return [
        SourceRecord(id=str(i), ts=1_700_000_000.0 + i, features=dict(x), label=y)
        for i, (x, y) in zip(range(n), itertools.cycle(base), strict=False)
    ]


def settings(name: str, bootstrap: str, redis_url: str, app: str) -> dict[str, Any]:
    """riverline's configuration for the job: its defaults but for the names and the model
    (and what ``app`` changes: see the module)."""
    # riverline-sparse: checkpoints off but for the one on stop (what they cost, by difference).
    checkpoint: dict[str, Any] = {"secret": "bench"}
    if app == "riverline-sparse":
        checkpoint.update(every_labels=1_000_000_000, every_seconds=1_000_000.0)
    raw: dict[str, Any] = {
        "name": name,
        "kafka": {
            "bootstrap": bootstrap,
            "partitions": 1,
            "topics": {t: f"{name}.{t}" for t in TOPICS},
        },
        "redis": {"url": redis_url},
        "model": {"spec": SPEC},
        "evaluation": {"metric": "Accuracy"},
        "fallback": {"default": 0},
        "checkpoint": checkpoint,
    }
    _, _, changes = app.partition(":")
    for change in filter(None, changes.split("+")):
        path, _, value = change.partition("=")
        *sections, key = path.split(".")
        target = raw
        for section in sections:
            target = target.setdefault(section, {})
        target[key] = yaml.safe_load(value)
    return raw


class Arrivals(threading.Thread):
    """Follows a topic from its start; the wall time of the first and the last record."""

    def __init__(self, bootstrap: str, topic: str, expected: int, timeout_s: float) -> None:
        super().__init__(daemon=True)
        self.expected, self.timeout_s = expected, timeout_s
        self.count = 0
        self.first = self.last = 0.0
        self.consumer = KafkaConsumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"arrivals-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
                # The outputs as written, committed or not: what a reader of predictions sees
                # first (riverline's are plain idempotent sends; Quix's at-least-once too).
                "isolation.level": "read_uncommitted",
            }
        )
        self.consumer.assign([TopicPartition(topic, 0, 0)])
        self.ready = threading.Event()
        self.stop = False

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        self.ready.set()
        try:
            while self.count < self.expected and time.monotonic() < deadline and not self.stop:
                batch = self.consumer.consume(1000, 0.05)
                if not batch:
                    continue
                now = time.monotonic()
                got = sum(1 for m in batch if m.error() is None)
                if got and not self.count:
                    self.first = now
                self.count += got
                self.last = now
        finally:
            self.consumer.close()


def command(app: str, cfg: RiverlineConfig, config_path: Path, state_dir: Path) -> list[str]:
    if app == "quix":
        topics = cfg.kafka.topics
        return [
            sys.executable,
            str(ROOT / "benchmarks" / "quix_peer.py"),
            "--bootstrap",
            cfg.kafka.bootstrap or "",
            "--events",
            topics.events,
            "--labels",
            topics.labels,
            "--predictions",
            topics.predictions,
            "--group",
            f"{cfg.name}-quix",
            "--state-dir",
            str(state_dir),
            "--guarantee",
            GUARANTEE["quix"],
        ]
    return [sys.executable, "-m", "pipeline.cli", "run", "-c", str(config_path)]


GUARANTEE = {"quix": "at-least-once"}


def one_run(
    app: str, data: list[SourceRecord], delay: int, bootstrap: str, redis_url: str
) -> dict[str, float]:
    name = f"peer-{uuid.uuid4().hex[:8]}"
    raw = settings(name, bootstrap, redis_url, app)
    cfg = load_config(None, raw, environ={})
    transport = make_transport(cfg.kafka, bootstrap)
    topic_names = [getattr(cfg.kafka.topics, t) for t in TOPICS]
    transport.ensure_topics(topic_names)
    publish(cfg, bootstrap, schedule(iter(data), LabelDelay(events=delay)))
    work = Path(tempfile.mkdtemp(prefix="riverline-peer-"))
    config_path = work / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    arrivals = Arrivals(bootstrap, cfg.kafka.topics.predictions, len(data), timeout_s=300)
    arrivals.start()
    arrivals.ready.wait()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    proc = subprocess.Popen(
        command(app, cfg, config_path, work / "state"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(work / "stderr.log", "wb"),  # noqa: SIM115
    )
    while arrivals.is_alive() and proc.poll() is None:
        arrivals.join(0.2)
    arrivals.stop = True
    arrivals.join()
    proc.send_signal(signal.SIGTERM)
    try:
        _, _, usage = os.wait4(proc.pid, 0)
        proc.returncode = 0
    except ChildProcessError:
        usage = None
    try:
        if arrivals.count < len(data):
            log = (work / "stderr.log").read_text()[-3000:]
            raise RuntimeError(f"{app}: {arrivals.count} of {len(data)} predictions\n{log}")
        n = len(data)
        return {
            "events_per_s": (n - 1) / (arrivals.last - arrivals.first),
            "from_start_events_per_s": n / (arrivals.last - started),
            "cpu_us_per_event": (
                (usage.ru_utime + usage.ru_stime) / n * 1e6 if usage is not None else float("nan")
            ),
        }
    finally:
        CheckpointStore(connect(redis_url), cfg.name, None).delete_all()
        transport.delete_topics(topic_names)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--delay", type=int, default=100, help="labels this many events late")
    parser.add_argument("--apps", default=",".join(APPS))
    parser.add_argument(
        "--quix-guarantee", choices=("at-least-once", "exactly-once"), default="at-least-once"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--baseline", default="quix", help="the app every other app's rate is a ratio of"
    )
    args = parser.parse_args()
    GUARANTEE["quix"] = args.quix_guarantee
    apps = [a for a in args.apps.split(",") if a]
    redis_url = resolve_redis_url("redis://127.0.0.1:6379/0")
    data = records(args.events)
    runs: dict[str, list[dict[str, float]]] = {a: [] for a in apps}
    load_before = os.getloadavg()
    with EmbeddedBroker() as broker:
        # A fresh broker's first topics and each app's first start are slower: not measured.
        for app in apps:
            one_run(app, data[:2000], args.delay, broker.bootstrap, redis_url)
        for repeat in range(args.repeats):
            order = apps[repeat % len(apps) :] + apps[: repeat % len(apps)]
            for app in order:
                run = one_run(app, data, args.delay, broker.bootstrap, redis_url)
                runs[app].append(run)
                print(
                    f"round {repeat + 1} {app:<17} {run['events_per_s']:>8.0f} ev/s  "
                    f"(from start {run['from_start_events_per_s']:>6.0f})  "
                    f"cpu {run['cpu_us_per_event']:>6.1f} us/ev",
                    flush=True,
                )
    results: dict[str, Any] = {
        "events": args.events,
        "delay": args.delay,
        "repeats": args.repeats,
        "quix_guarantee": args.quix_guarantee,
        "load_average": [load_before, os.getloadavg()],
    }
    print(f"\n{args.events} Shuttle events, labels {args.delay} late, medians of {args.repeats}")
    for app in apps:
        row: dict[str, Any] = {k: statistics.median(r[k] for r in runs[app]) for k in runs[app][0]}
        row["runs"] = [r["events_per_s"] for r in runs[app]]
        results[app] = row
        print(
            f"{app:<17} {row['events_per_s']:>8.0f} ev/s  cpu {row['cpu_us_per_event']:>6.1f} us/ev"
            f"  ({', '.join(f'{r:.0f}' for r in row['runs'])})"
        )
    base = args.baseline
    if base in results:
        for app in apps:
            if app != base:
                ratio = results[app]["events_per_s"] / results[base]["events_per_s"]
                results[app][f"ratio_to_{base}"] = ratio
                # Each round's own ratio too: a neighbour's burst slows one round's runs alike
                # more often than it slows one app's runs in every round.
                rounds = [
                    r["events_per_s"] / q["events_per_s"]
                    for r, q in zip(runs[app], runs[base], strict=True)
                ]
                results[app][f"ratio_to_{base}_by_round"] = rounds
                print(
                    f"{app} / {base}: {ratio:.2f} x (medians); by round "
                    f"{', '.join(f'{r:.2f}' for r in rounds)}, "
                    f"median {statistics.median(rounds):.2f} x"
                )
    print(f"load average before {load_before}, after {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
