"""riverline's speed harness (not a test): medians of repeated runs, ratios to the bare loop.

    python benchmarks/run.py [--repeats 3] [--events 20000] [--datasets bananas,shuttle]
                             [--in-process-only] [--json out.json]

Per dataset (River's Bananas, 2 features; River's Shuttle, 9 numeric features, ships with
River, no download), on the same model spec and labels 50 events late:

1. bare: River's own loop, predict_proba_one + learn_one per event, no delay;
   (In-process stages are timed in CPU time, see CLOCK.)
2. core: riverline's learning core in-process (join, fallback, gating, evaluation) over a
   pre-decoded stream: ``on_event`` + ``on_label`` only;
3. stages in-process, in microseconds per event, over the replay's own bytes: decode,
   validation, merge, predict + serve, join + evaluate + learn, prediction encoding, the
   consumer's per-record telemetry (its ``_process`` minus the core and the encoding) and a
   checkpoint amortised over ``checkpoint.every_labels`` labels (written to the local Redis);
4. end to end (unless --in-process-only): replay published to the broker first, then
   ``Consumer`` reads, merges, learns, publishes every prediction, checkpoints to Redis; its
   fetch (poll + decode + validation + merge push), produce (send) and checkpoint time are
   timed from inside the consumer, per event;
5. live latency (Bananas only): the producer paced at ``--rate`` events/s (``kafka.linger_ms``)
   while the consumer runs; event-to-prediction latency from send time to the prediction
   handed to the producer.

In-process loops run with the garbage-collector settings of a running consumer
(``consumers.gc_policy.tune_for_streaming``: what is alive when the loop starts is frozen, young
objects are collected every 10,000 allocations), the bare loop as well; ``--gc default`` keeps
CPython's defaults for every loop.

Throughputs are events per second; ratios divide by the bare loop measured in the same run on
the same dataset, so machines of different speeds (and a busy machine) give comparable ratios.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import pickle
import statistics
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from river import datasets

from consumers.gc_policy import tune_for_streaming
from consumers.outputs import Outputs
from consumers.processing import RecordProcessor
from consumers.run import Consumer
from pipeline.checkpointing.store import CheckpointStore
from pipeline.config import RiverlineConfig, load_config
from pipeline.core import LearningCore
from pipeline.kafka import records as records_module
from pipeline.kafka.embedded import EmbeddedBroker
from pipeline.kafka.records import KIND_EVENT, KIND_LABEL, SENT_HEADER, SEQ_HEADER, to_item
from pipeline.kafka.transport import Record
from pipeline.models import parse_model_spec
from pipeline.ordering import OrderedMerge
from pipeline.schemas import Event, Label, encode, parse_event, parse_label
from pipeline.state.redis_client import connect, resolve_redis_url
from pipeline.telemetry import PipelineMetrics
from pipeline.validation import Validator, check_event, check_label
from producers.replay import event_payload, label_payload, publish
from producers.schedule import Emission, LabelDelay, schedule
from producers.sources import SourceRecord

# In-process stages are timed in this process's CPU time: on a machine shared with other
# work, wall time counts the waits for a core too, CPU time does not.
CLOCK = time.process_time
SPEC = "preprocessing.StandardScaler | linear_model.LogisticRegression"
DELAY = 50
DATASETS: dict[str, Callable[[], Any]] = {
    "bananas": datasets.Bananas,
    "shuttle": datasets.Shuttle,
}
STAGES = (
    "decode",
    "validation",
    "merge",
    "predict_serve",
    "join_evaluate_learn",
    "encode",
    "telemetry",
    "checkpoint_amortised",
)


def records(dataset: str, n: int) -> list[SourceRecord]:
    base = list(itertools.islice(DATASETS[dataset](), n))
    return [
        SourceRecord(id=str(i), ts=1_700_000_000.0 + i, features=dict(x), label=y)
        for i, (x, y) in zip(range(n), itertools.cycle(base), strict=False)
    ]


GC_SETTINGS = {"mode": "streaming"}


@contextmanager
def consumer_gc() -> Iterator[None]:
    """The collector as a running consumer has it (unless ``--gc default``), then as before."""
    if GC_SETTINGS["mode"] == "default":
        yield
        return
    threshold = gc.get_threshold()
    tune_for_streaming()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def bare_loop(data: list[SourceRecord]) -> float:
    model: Any = parse_model_spec(SPEC)
    with consumer_gc():
        started = CLOCK()
        for r in data:
            model.predict_proba_one(r.features)
            model.learn_one(r.features, r.label)
        return len(data) / (CLOCK() - started)


def emissions_of(data: list[SourceRecord]) -> list[Emission]:
    return list(schedule(iter(data), LabelDelay(events=DELAY)))


def parsed_stream(data: list[SourceRecord]) -> list[Event | Label]:
    return [
        Event(id=e.record.id, ts=e.ts, features=e.record.features)
        if e.kind == "event"
        else Label(id=e.record.id, ts=e.ts, label=e.record.label)  # type: ignore[arg-type]
        for e in emissions_of(data)
    ]


def core_loop(parsed: list[Event | Label], cfg: RiverlineConfig, events: int) -> float:
    core = LearningCore.from_config(cfg)
    on_event, on_label = core.on_event, core.on_label
    with consumer_gc():
        started = CLOCK()
        for item in parsed:
            if type(item) is Event:
                on_event(item)
            else:
                on_label(item)  # type: ignore[arg-type]
        return events / (CLOCK() - started)


class FakeRecord(NamedTuple):
    """What a kafka-python ConsumerRecord offers to ``to_item``."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class NullProducer:
    """Stands in for the Kafka producer in the in-process consumer pass: sends go nowhere,
    acknowledged at once."""

    def send(self, topic: str, key: bytes | None, value: bytes | None, **kw: Any) -> None:
        on_delivery = kw.get("on_delivery")
        if on_delivery is not None:
            on_delivery(None)

    def tracked_sender(self) -> NullTrackedSender:
        return NullTrackedSender()

    def flush(self, timeout_s: float) -> None:
        pass

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass


class NullTrackedSender:
    """The durable outputs' sender on the null producer: every record acknowledged at once."""

    def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None) -> None:
        pass

    def unacknowledged(self) -> list[Any]:
        return []


def wire_records(data: list[SourceRecord], cfg: RiverlineConfig) -> list[FakeRecord]:
    """The replay's own bytes and headers, as the consumer would fetch them."""
    topics = cfg.kafka.topics
    out = []
    offsets = {topics.events: 0, topics.labels: 0}
    sent = str(int(time.time() * 1000)).encode()
    for e in emissions_of(data):
        if e.kind == "event":
            topic, payload = topics.events, event_payload(e.record)
        else:
            topic, payload = topics.labels, label_payload(e.record, e.ts)
        out.append(
            FakeRecord(
                topic,
                0,
                offsets[topic],
                int(e.ts * 1000),
                e.record.id.encode(),
                json.dumps(payload, separators=(",", ":")).encode(),
                [(SEQ_HEADER, str(e.seq).encode()), (SENT_HEADER, sent)],
            )
        )
        offsets[topic] += 1
    return out


def _record_fields(r: FakeRecord) -> tuple[Any, ...]:
    """A wire record's fields in a transport Record's order."""
    return (r.topic, r.partition, r.offset, r.key, r.value, r.timestamp, r.headers)


def stages_in_process(
    data: list[SourceRecord], cfg: RiverlineConfig, redis_url: str
) -> dict[str, float]:
    """Microseconds per event of each in-process stage (one run)."""
    n = len(data)
    wire = wire_records(data, cfg)
    kinds = {cfg.kafka.topics.events: KIND_EVENT, cfg.kafka.topics.labels: KIND_LABEL}
    validator = Validator(cfg.validation, regression=False)
    us: dict[str, float] = {}

    started = CLOCK()
    parsed = [
        parse_event(r.value) if kinds[r.topic] == KIND_EVENT else parse_label(r.value) for r in wire
    ]
    us["decode"] = (CLOCK() - started) / n * 1e6
    # Validation: the limits beyond the schema, plus building the merge item around the record,
    # as the consumer does: a fetch's Records, 500 per partition, one to_items call each (to_item
    # record by record on a tree without it).
    batches: list[tuple[tuple[str, int], list[int]]] = []
    for start in range(0, len(wire), 1000):
        by_partition: dict[tuple[str, int], list[int]] = {}
        for index in range(start, min(start + 1000, len(wire))):
            by_partition.setdefault((wire[index].topic, 0), []).append(index)
        batches.extend(by_partition.items())
    fetched = [
        (partition, [Record(*_record_fields(wire[i])) for i in indexes])
        for partition, indexes in batches
    ]
    to_items = getattr(records_module, "to_items", None)
    made: list[list[Any]] = []
    started = CLOCK()
    for partition, batch in fetched:
        kind = kinds[partition[0]]
        if to_items is None:
            made.append([to_item(r, kind, validator) for r in batch])
        else:
            made.append(to_items(batch, partition, kind, validator))
    to_item_s = CLOCK() - started
    items: list[Any] = [None] * len(wire)
    for (_, indexes), batch_items in zip(batches, made, strict=True):
        for index, item in zip(indexes, batch_items, strict=True):
            items[index] = item
    now = time.time()
    started = CLOCK()
    for p in parsed:
        if type(p) is Event:
            check_event(p, cfg.validation, now)
        else:
            check_label(p, cfg.validation, now, False)  # type: ignore[arg-type]
    checks_s = CLOCK() - started
    us["validation"] = max(checks_s, to_item_s - us["decode"] * n / 1e6) / n * 1e6

    merge = OrderedMerge(0)
    partitions = [(t, 0) for t in kinds]
    merge.assign(partitions)
    started = CLOCK()
    for partition in partitions:
        merge.set_lag(partition, 0)
    for start in range(0, len(items), 500):
        batch = items[start : start + 500]
        for partition in partitions:
            merge.push(partition, [i for i in batch if i.partition == partition])
        while merge.pop() is not None:
            pass
    us["merge"] = (CLOCK() - started) / n * 1e6

    core = LearningCore.from_config(cfg)
    predict_s = learn_s = encode_s = 0.0
    clock = CLOCK
    for p in parsed:
        if type(p) is Event:
            t0 = clock()
            outcome = core.on_event(p)
            t1 = clock()
            # What the consumer publishes: the fields encoded directly where the core offers
            # that (this harness also runs against older cores, which only had the model).
            to_json = getattr(outcome, "prediction_json", None)
            to_json() if to_json is not None else encode(outcome.prediction)  # type: ignore[arg-type]
            t2 = clock()
            predict_s += t1 - t0
            encode_s += t2 - t1
        else:
            t0 = clock()
            core.on_label(p)  # type: ignore[arg-type]
            learn_s += clock() - t0
    us["predict_serve"] = predict_s / n * 1e6
    us["join_evaluate_learn"] = learn_s / n * 1e6
    us["encode"] = encode_s / n * 1e6

    # The consumer's own per-record path (core, encoding, metrics), with sends going nowhere.
    client = connect(redis_url)
    outputs = Outputs(NullProducer, cfg.kafka.topics, cfg.name, 1, flush_timeout_s=5.0)
    processor = RecordProcessor(
        LearningCore.from_config(cfg), outputs, PipelineMetrics(), cfg, lambda _labels: None
    )
    incoming = [i.payload for i in items]
    process = processor.process
    # Per batch of 500, as the consumer's drain: the metrics' flush and the histograms' fold.
    tidy = getattr(processor, "tidy", lambda: None)
    started = CLOCK()
    for start in range(0, len(incoming), 500):
        for inc in incoming[start : start + 500]:
            process(inc)
        processor.metrics.flush()
        tidy()
    process_s = CLOCK() - started
    core_s = predict_s + learn_s + encode_s
    us["telemetry"] = max(0.0, process_s - core_s) / n * 1e6

    store = CheckpointStore(client, cfg.name, b"bench", keep=1)
    saves = []
    for _ in range(3):
        started = time.perf_counter()  # wall time: the Redis write is a wait, not CPU
        store.save(core.state, {("events", 0): n, ("labels", 0): n})
        saves.append(time.perf_counter() - started)
    store.delete_all()
    # One checkpoint per every_labels labels, one label per event.
    us["checkpoint_amortised"] = statistics.median(saves) / cfg.checkpoint.every_labels * 1e6
    us["checkpoint_ms"] = statistics.median(saves) * 1000
    us["checkpoint_bytes"] = float(
        len(zlib.compress(pickle.dumps(core.state, protocol=pickle.HIGHEST_PROTOCOL), 1))
    )
    return us


def config(bootstrap: str, redis_url: str) -> RiverlineConfig:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    return load_config(
        None,
        {
            "name": name,
            "kafka": {
                "bootstrap": bootstrap,
                "partitions": 1,
                "topics": {
                    t: f"{name}.{t}"
                    for t in ("events", "labels", "predictions", "dead_letters", "review_requests")
                },
            },
            "redis": {"url": redis_url},
            "model": {"spec": SPEC},
            "evaluation": {"metric": "Accuracy"},
            "fallback": {"default": 0},
            "gating": {"min_labels": 200, "window": 500},
            "checkpoint": {"secret": "bench", "every_labels": 5000},
            "ordering": {"max_idle_ms": 200},
        },
        environ={},
    )


class TimedConsumer(Consumer):
    """The real consumer, with its fetch, sends and checkpoints timed from inside."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spent = {"fetch": 0.0, "process": 0.0, "produce": 0.0, "checkpoint": 0.0}

    def on_started(self) -> None:
        """Wrap the fetch, the per-record processing and the sends with timers."""
        assert self.inputs is not None and self.processor is not None
        assert self.outputs is not None
        self.inputs.fetch = self._timed(self.inputs.fetch, "fetch")  # type: ignore[method-assign]
        self.processor.process = self._timed(self.processor.process, "process")  # type: ignore[method-assign]
        durable = self.outputs.durable
        durable.send = self._timed(durable.send, "produce")  # type: ignore[method-assign]

    def _timed(self, call: Callable[..., Any], stage: str) -> Callable[..., Any]:
        spent = self.spent

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                spent[stage] += time.perf_counter() - started

        return timed

    def checkpoint(
        self, reason: str, commit_group: bool = True, background: bool | None = None
    ) -> int | None:
        # With background writes this is what the event path pays: the flush and the fork.
        started = time.perf_counter()
        try:
            return super().checkpoint(reason, commit_group, background)
        finally:
            self.spent["checkpoint"] += time.perf_counter() - started


def end_to_end(data: list[SourceRecord], bootstrap: str, redis_url: str) -> dict[str, Any]:
    cfg = config(bootstrap, redis_url)
    publish(cfg, bootstrap, schedule(iter(data), LabelDelay(events=DELAY)))
    client = connect(redis_url)
    consumer = TimedConsumer(cfg, bootstrap, client, until_idle=0.5)
    report = consumer.run()
    CheckpointStore(client, cfg.name, None).delete_all()
    assert report["events"] == len(data), report
    n = len(data)
    spent = consumer.spent
    # Active time: first record fetched to last processed (the group join is not throughput).
    return {
        "events_per_s": n / report["run"]["active_seconds"],
        "fetch_us": spent["fetch"] / n * 1e6,
        "process_us": (spent["process"] - spent["produce"]) / n * 1e6,
        "produce_us": spent["produce"] / n * 1e6,
        "checkpoint_us": spent["checkpoint"] / n * 1e6,
    }


def paced_publish(
    cfg: RiverlineConfig, bootstrap: str, data: list[SourceRecord], rate: float
) -> None:
    """Publish ``data`` with its labels ``DELAY`` events late, events at ``rate`` per second.

    Through the replay's own pacer (event ``i`` due ``i / rate`` s after the first; the records'
    times are one second apart), so the producer keeps ``kafka.linger_ms``: the replay at full
    speed lingers 20 ms to batch, which a paced latency run would count as latency.
    """
    publish(cfg, bootstrap, schedule(iter(data), LabelDelay(events=DELAY)), speed=rate)


def live_latency(
    data: list[SourceRecord], bootstrap: str, redis_url: str, rate: float
) -> dict[str, Any]:
    """Producer paced at ``rate`` events/s while the consumer runs."""
    cfg = config(bootstrap, redis_url)
    client = connect(redis_url)
    consumer = Consumer(cfg, bootstrap, client, until_idle=1.5)
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(report=consumer.run()))
    thread.start()
    time.sleep(4.0)  # let the consumer join its group first

    paced_publish(cfg, bootstrap, data, rate)
    thread.join()
    CheckpointStore(client, cfg.name, None).delete_all()
    return dict(result["report"]["run"]["latency_ms"]["event_to_prediction"])


def median_of(repeats: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(repeats))


def median_dicts(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--datasets", default="bananas,shuttle")
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s for the latency run")
    parser.add_argument("--in-process-only", action="store_true", help="skip broker stages")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--gc",
        choices=("streaming", "default"),
        default="streaming",
        help="in-process loops with a running consumer's collector settings, or CPython's",
    )
    args = parser.parse_args()
    GC_SETTINGS["mode"] = args.gc
    redis_url = resolve_redis_url("redis://127.0.0.1:6379/0")
    cfg_core = config("unused:9092", redis_url)
    results: dict[str, Any] = {
        "events": args.events,
        "repeats": args.repeats,
        "model": SPEC,
        "gc": args.gc,
    }
    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    for name in names:
        data = records(name, args.events)
        parsed = parsed_stream(data)
        bare, core, stages = [], [], []
        # Interleaved, so a busy neighbour slows every measurement of a round alike.
        for _ in range(args.repeats):
            bare.append(bare_loop(data))
            core.append(core_loop(parsed, cfg_core, len(data)))
            with consumer_gc():
                stages.append(stages_in_process(data, cfg_core, redis_url))
        results[name] = {
            "bare_events_per_s": statistics.median(bare),
            "core_events_per_s": statistics.median(core),
            "core_ratios": [c / b for c, b in zip(core, bare, strict=True)],
            "stages_us_per_event": median_dicts(stages),
        }
    if not args.in_process_only:
        with EmbeddedBroker() as broker:
            for name in names:
                data = records(name, args.events)
                runs = [end_to_end(data, broker.bootstrap, redis_url) for _ in range(args.repeats)]
                results[name]["end_to_end"] = median_dicts(runs)
                results[name]["end_to_end_events_per_s"] = results[name]["end_to_end"][
                    "events_per_s"
                ]
            lat_data = records(names[0], int(args.rate * 5))
            results["latency_ms_at_rate"] = {
                "rate": args.rate,
                **live_latency(lat_data, broker.bootstrap, redis_url, args.rate),
            }
    for name in names:
        r = results[name]
        bare = r["bare_events_per_s"]
        print(f"\n{name} ({args.events} events, medians of {args.repeats})")
        print(f"{'stage':<14}{'events/s':>12}{'ratio to bare':>16}")
        for stage in ("bare", "core", "end_to_end"):
            if f"{stage}_events_per_s" in r:
                value = r[f"{stage}_events_per_s"]
                print(f"{stage:<14}{value:>12.0f}{value / bare:>16.2f}")
        print(f"{'in-process stage':<26}{'us/event':>10}")
        print(f"{'(bare predict+learn)':<26}{1e6 / bare:>10.1f}")
        for stage in STAGES:
            print(f"{stage:<26}{r['stages_us_per_event'][stage]:>10.1f}")
        print(
            f"checkpoint: {r['stages_us_per_event']['checkpoint_ms']:.1f} ms, "
            f"{r['stages_us_per_event']['checkpoint_bytes'] / 1024:.0f} KiB"
        )
        if "end_to_end" in r:
            e2e = r["end_to_end"]
            print(f"{'end-to-end stage':<26}{'us/event':>10}")
            for key in ("fetch_us", "process_us", "produce_us", "checkpoint_us"):
                print(f"{key.removesuffix('_us'):<26}{e2e[key]:>10.1f}")
    if "latency_ms_at_rate" in results:
        lat = results["latency_ms_at_rate"]
        print(
            f"\nevent-to-prediction latency at {lat['rate']:.0f} events/s: p50 {lat['p50']:.1f} "
            f"ms, p90 {lat['p90']:.1f} ms, p99 {lat['p99']:.1f} ms (n={lat['count']})"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
