"""Scale-out figures (issue 11): predictions/s of ``run`` against a learner with one and with
two predictor processes on 4 partitions; time from a new model version to the first prediction
that uses it; time from a predictor's SIGKILL to its partitions being served again.

Every process is the real console script on the embedded broker and the local Redis.

    python benchmarks/scale.py [--events 20000] [--runs 3]

Throughput counts from the first prediction to the last one published (record timestamps of
the predictions topic), so group joins and idle waits are left out; the median of ``--runs``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from kafka import KafkaConsumer, TopicPartition

from pipeline.checkpointing.store import CheckpointStore
from pipeline.kafka.embedded import EmbeddedBroker
from pipeline.state.redis_client import connect, resolve_redis_url

SECRET = "bench-scale"
TOPICS = ("events", "labels", "predictions", "dead_letters", "review_requests")


def config(name: str, bootstrap: str, redis_url: str, inputs: str, client: str) -> dict[str, Any]:
    """Its own outputs and Redis keys, reading the events and labels of ``inputs``."""
    topics = {t: f"{name}.{t}" for t in TOPICS}
    topics["events"], topics["labels"] = f"{inputs}.events", f"{inputs}.labels"
    return {
        "name": name,
        "kafka": {"bootstrap": bootstrap, "partitions": 4, "topics": topics, "client": client},
        "redis": {"url": redis_url},
        "model": {"spec": "preprocessing.StandardScaler | linear_model.LogisticRegression"},
        "evaluation": {"metric": "Accuracy", "extra_metrics": []},
        "fallback": {"default": False},
        "gating": {"min_labels": 200, "window": 500},
        "checkpoint": {"every_labels": 5000, "lease_ttl_ms": 3000},
        "serving": {"every_labels": 1000, "every_seconds": 1.0, "poll_seconds": 2.0},
    }


def cli(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERLINE_")}
    env["RIVERLINE_CHECKPOINT_SECRET"] = SECRET
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def wait(procs: list[subprocess.Popen[bytes]], timeout: float = 600) -> None:
    for proc in procs:
        proc.wait(timeout=timeout)


def timestamps(bootstrap: str, topic: str) -> dict[int, list[int]]:
    """Per partition, the record timestamps (ms) of a topic, in offset order."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = sorted(consumer.partitions_for_topic(topic) or set())
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: dict[int, list[int]] = {p: [] for p in parts}
        idle = 0
        while idle < 8:
            batch = consumer.poll(timeout_ms=250)
            if not batch:
                idle += 1
                continue
            idle = 0
            for tp, records in batch.items():
                out[tp.partition].extend(r.timestamp for r in records)
        return out
    finally:
        consumer.close()


def rate(stamps: dict[int, list[int]]) -> tuple[int, float]:
    every = sorted(t for ts in stamps.values() for t in ts)
    span = (every[-1] - every[0]) / 1000 if len(every) > 1 else float("nan")
    return len(every), len(every) / span


def throughput(
    mode: str, bootstrap: str, redis_url: str, inputs: str, client: str, tmp: Path
) -> dict[str, Any]:
    name = f"bench-{mode}-{uuid.uuid4().hex[:6]}"
    cfg_file = tmp / f"{name}.yaml"
    cfg_file.write_text(yaml.safe_dump(config(name, bootstrap, redis_url, inputs, client)))
    common = ["--config", str(cfg_file), "--until-idle", "4"]
    if mode == "run":
        procs = [cli(["run", *common], tmp / f"{name}.log")]
    else:
        n = int(mode.split("-")[1])
        procs = [cli(["learner", *common], tmp / f"{name}.learner.log")]
        reports = [tmp / f"{name}.p{i}.json" for i in range(n)]
        procs += [
            cli(["predictor", *common, "--report", str(r)], tmp / f"{name}.p{i}.log")
            for i, r in enumerate(reports)
        ]
    wait(procs)
    if any(p.returncode for p in procs):
        raise SystemExit(f"{mode}: a process failed, see {tmp}")
    count, per_s = rate(timestamps(bootstrap, f"{name}.predictions"))
    result: dict[str, Any] = {"predictions": count, "per_s": per_s}
    if mode != "run":
        firsts = [json.loads(r.read_text())["run"]["latency_ms"] for r in reports if r.exists()]
        result["version_to_first_use_ms"] = [f["model_version_to_first_use"] for f in firsts]
    CheckpointStore(connect(redis_url), name, None).delete_all()
    return result


def failover(
    bootstrap: str, redis_url: str, client: str, tmp: Path, rate_per_s: int
) -> tuple[float, dict[str, Any]]:
    """Seconds from a predictor's SIGKILL to every partition being served again; and, from the
    surviving predictor, the time from each new model version to its first prediction."""
    name = f"bench-failover-{uuid.uuid4().hex[:6]}"
    cfg_file = tmp / f"{name}.yaml"
    cfg_file.write_text(yaml.safe_dump(config(name, bootstrap, redis_url, name, client)))
    common = ["--config", str(cfg_file), "--until-idle", "4"]
    learner = cli(["learner", *common], tmp / f"{name}.learner.log")
    survivor = tmp / f"{name}.p1.json"
    predictors = [
        cli(["predictor", *common], tmp / f"{name}.p0.log"),
        cli(["predictor", *common, "--report", str(survivor)], tmp / f"{name}.p1.log"),
    ]
    replay = cli(
        [
            "replay",
            "--config",
            str(cfg_file),
            "--source",
            "synth:SEA:n=12000",
            "--label-delay",
            "50",
            "--speed",
            str(rate_per_s),
        ],
        tmp / f"{name}.replay.log",
    )
    time.sleep(12)  # joined and serving
    killed_at = time.time() * 1000
    predictors[0].send_signal(signal.SIGKILL)
    wait([replay, predictors[1], learner])
    stamps = timestamps(bootstrap, f"{name}.predictions")
    # The longest silence of a partition across the kill: the rebalance, for the killed one's.
    worst = 0.0
    for ts in stamps.values():
        before = [t for t in ts if t <= killed_at]
        after = [t for t in ts if t > killed_at]
        if before and after:
            worst = max(worst, (after[0] - killed_at) / 1000)
    CheckpointStore(connect(redis_url), name, None).delete_all()
    first_use = json.loads(survivor.read_text())["run"]["latency_ms"]["model_version_to_first_use"]
    return worst, first_use


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--client", default="confluent")
    parser.add_argument("--failover-rate", type=int, default=500)
    args = parser.parse_args()
    redis_url = resolve_redis_url("redis://127.0.0.1:6379/0")
    with EmbeddedBroker() as broker:
        tmp = Path(tempfile.mkdtemp(prefix="riverline-scale-"))  # logs kept to read
        print(f"logs in {tmp}")
        bootstrap = broker.bootstrap
        inputs = f"bench-inputs-{uuid.uuid4().hex[:6]}"
        cfg_file = tmp / "inputs.yaml"
        cfg_file.write_text(
            yaml.safe_dump(config(inputs, bootstrap, redis_url, inputs, args.client))
        )
        published = cli(
            [
                "replay",
                "--config",
                str(cfg_file),
                "--source",
                f"synth:SEA:n={args.events}",
                "--label-delay",
                "50",
            ],
            tmp / "replay.log",
        )
        wait([published])
        figures: dict[str, list[dict[str, Any]]] = {}
        for _ in range(args.runs):
            for mode in ("run", "learner-1", "learner-2"):
                figures.setdefault(mode, []).append(
                    throughput(mode, bootstrap, redis_url, inputs, args.client, tmp)
                )
        print(f"{args.events} events, 4 partitions, {args.client}, medians of {args.runs}:")
        for mode, runs in figures.items():
            per_s = statistics.median(r["per_s"] for r in runs)
            print(
                f"  {mode:10s} {per_s:10.0f} predictions/s  ({[round(r['per_s']) for r in runs]})"
            )
        failovers = [
            failover(bootstrap, redis_url, args.client, tmp, args.failover_rate)
            for _ in range(args.runs)
        ]
        gaps = [gap for gap, _ in failovers]
        uses = [use for _, use in failovers if use.get("count")]
        print(
            f"  paced {args.failover_rate} ev/s, a model version a second, 2 predictors:\n"
            "  new model version -> first prediction using it: "
            f"p50 {statistics.median(u['p50'] for u in uses):.0f} ms, "
            f"p99 {statistics.median(u['p99'] for u in uses):.0f} ms "
            f"({sum(u['count'] for u in uses)} versions; median of runs)"
        )
        print(
            "  predictor SIGKILL -> its partitions served again: "
            f"median {statistics.median(gaps):.1f} s ({[round(g, 1) for g in gaps]}; "
            "session timeout 6 s)"
        )


if __name__ == "__main__":
    main()
