"""The lean hot path gives exactly what the straightforward code gave."""

import math
import os
import pickle
import random
import zlib
from collections import OrderedDict, deque
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram

from pipeline.checkpointing.store import compression_level
from pipeline.config import load_config
from pipeline.core import LearningCore
from pipeline.evaluation import ABSTAIN, Evaluator, adapt
from pipeline.join import DUPLICATE, JoinBuffer, Pending
from pipeline.models import make_metric
from pipeline.schemas import Event, Label, Prediction, encode
from pipeline.telemetry import HistogramBatch, LatencyHistogram


def core_for(**overrides: Any) -> LearningCore:
    return LearningCore.from_config(load_config(None, {"name": "unit", **overrides}, environ={}))


@pytest.mark.parametrize(
    ("spec", "metric", "fallback", "truth"),
    [
        ("linear_model.LogisticRegression", "Accuracy", {"default": False}, lambda a: a > 0.5),
        ("tree.HoeffdingTreeClassifier", "Accuracy", {"default": "no"}, lambda a: "yes"),
        (
            "preprocessing.StandardScaler | linear_model.LinearRegression",
            "MAE",
            {"default": 100.0},
            lambda a: 3.0 * a,
        ),
        ("tree.HoeffdingTreeClassifier", "Accuracy", {"default": 0}, lambda a: int(a * 3)),
    ],
)
def test_published_prediction_bytes_equal_the_validated_model(
    spec: str, metric: str, fallback: dict[str, Any], truth: Any
) -> None:
    core = core_for(
        model={"spec": spec},
        evaluation={"metric": metric},
        fallback=fallback,
        gating={"min_labels": 5, "window": 20},
    )
    rng = random.Random(1)
    served_by_model = 0
    for i in range(300):
        x: dict[str, Any] = {"a": rng.random(), "b": rng.choice([1, 2, None]), "c": rng.random()}
        outcome = core.on_event(Event(id=str(i), ts=float(i), features=x))
        payload = outcome.prediction_json()
        assert outcome.prediction_fields is not None
        reference = Prediction(**outcome.prediction_fields)  # validated, as before
        assert payload == encode(reference)
        assert outcome.prediction == reference
        served_by_model += reference.source == "model"
        core.on_label(Label(id=str(i), ts=float(i), label=truth(x["a"])))
    assert served_by_model > 0  # both the model's and the fallback's answers were encoded


class ReferenceEvaluation:
    """The evaluation as it was: River's metrics alone, each prediction adapted per metric,
    the windows kept with River's update and revert."""

    def __init__(self, names: tuple[str, ...], window: int) -> None:
        self.cumulative = {
            role: {name: make_metric(name) for name in names}
            for role in ("model", "fallback", "served")
        }
        self.windows = {role: make_metric(names[0]) for role in ("model", "fallback")}
        self.pairs: dict[str, deque[tuple[Any, Any]]] = {"model": deque(), "fallback": deque()}
        self.size = window

    def update(self, y: Any, model: Any, fallback: Any, served: Any) -> None:
        for role, y_pred in (("model", model), ("fallback", fallback), ("served", served)):
            for metric in self.cumulative[role].values():
                pred = adapt(metric, y_pred)
                if pred is not None:
                    metric.update(y, pred)
        model_pred = adapt(self.windows["model"], model)
        fallback_pred = adapt(self.windows["fallback"], fallback)
        if model_pred is not None and fallback_pred is not None:
            for role, pred in (("model", model_pred), ("fallback", fallback_pred)):
                self.windows[role].update(y, pred)
                self.pairs[role].append((y, pred))
                if len(self.pairs[role]) > self.size:
                    self.windows[role].revert(*self.pairs[role].popleft())

    def values(self) -> dict[str, dict[str, float]]:
        return {
            role: {name: float(m.get()) for name, m in by_name.items()}
            for role, by_name in self.cumulative.items()
        }

    def windowed(self) -> dict[str, float | int]:
        return {
            "model": float(self.windows["model"].get()),
            "fallback": float(self.windows["fallback"].get()),
            "size": len(self.pairs["model"]),
        }


@pytest.mark.parametrize("metric", ["Accuracy", "ROCAUC", "LogLoss", "F1", "MacroF1"])
@pytest.mark.parametrize("extras", [("Accuracy", "LogLoss", "F1"), (), ("F1", "MacroF1")])
def test_evaluator_equals_adapting_per_metric(metric: str, extras: tuple[str, ...]) -> None:
    fast = Evaluator(metric, extras, window=20)
    slow = ReferenceEvaluation(fast.names, window=20)
    rng = random.Random(7)
    for i in range(500):
        y = rng.random() < 0.4
        p = rng.random()
        model = None if i % 17 == 0 else ({} if i % 23 == 0 else {True: p, False: 1 - p})
        fallback = None if i % 13 == 0 else rng.random() < 0.5
        served = rng.choice([model, fallback, rng.random() < 0.5])
        label, *windows = fast.score(y, model, fallback, served)
        slow.update(y, model, fallback, served)
        assert tuple(windows) == tuple(slow.windowed().values())
        assert label == (ABSTAIN if not model else max(model, key=model.__getitem__))
        if i % 50 == 0:
            assert fast.windowed_values() == tuple(slow.windowed().values())
        if i == 250:  # a checkpoint in the middle: the derived plans are rebuilt after it
            fast = pickle.loads(pickle.dumps(fast))
    assert fast.values() == slow.values()
    assert fast.windowed() == slow.windowed()
    assert fast.windowed_values() == tuple(slow.windowed().values())
    restored = pickle.loads(pickle.dumps(fast))
    for key in ("_plans", "_labels_only", "_window_kind"):
        assert key not in restored.__dict__
    # The window's River metric, rebuilt from its pairs, says what River's own said.
    assert restored.window_model.metric.get() == slow.windows["model"].get()
    assert restored.windowed() == slow.windowed()


def reference_expire(
    buf: JoinBuffer, now_ts: float, now_number: int
) -> tuple[list[str], list[str], list[str]]:
    def expired(ts: float, number: int) -> bool:
        if buf.ttl_events is not None and now_number - number > buf.ttl_events:
            return True
        return buf.ttl_seconds is not None and now_ts - ts > buf.ttl_seconds

    queues: list[OrderedDict[str, Any]] = [buf.pending, buf.parked, buf.joined]
    # Events a full buffer let go at the end of their count TTL come first (JoinBuffer.add).
    out: list[list[str]] = [[p.id for p in buf._due], [], []]
    for queue, gone in zip(queues, out, strict=True):
        for key, value in list(queue.items()):
            if isinstance(value, Pending):
                ts, number = value.ts, value.number
            elif isinstance(value, tuple):
                ts, number = value
            else:
                ts, number = value.label.ts, value.number
            if not expired(ts, number):
                break
            gone.append(key)
    return out[0], out[1], out[2]


@pytest.mark.parametrize(("ttl_events", "ttl_seconds"), [(30, None), (None, 0.3), (25, 0.7)])
def test_join_expiry_equals_the_rule(ttl_events: int | None, ttl_seconds: float | None) -> None:
    buf = JoinBuffer(ttl_events, ttl_seconds, max_pending=1000)
    rng = random.Random(3)
    watermark = float("-inf")
    for n in range(1, 2000):
        ts = n * 0.1 + rng.uniform(-0.5, 0.5)  # out of order, and not exact in binary
        watermark = max(watermark, ts)
        buf.add_event(Pending(f"e{n}", ts, {}, None, None, None), n)
        if rng.random() < 0.5:
            buf.match(f"e{n - rng.randint(0, 40)}")
        if rng.random() < 0.2:
            buf.park_label(Label(id=f"l{n}", ts=ts, label=True), n)
        expected = reference_expire(buf, watermark, n)
        joined_before = list(buf.joined)
        events, labels = buf.expire(watermark, n)
        assert [p.id for p in events] == expected[0]
        assert [p.label.id for p in labels] == expected[1]
        assert joined_before[: len(expected[2])] == expected[2]
        assert list(buf.joined) == joined_before[len(expected[2]) :]


def test_histogram_batch_equals_observing_each_value() -> None:
    registry = CollectorRegistry()
    buckets = (0.001, 0.01, 0.1, 1.0)
    one = Histogram("one_seconds", "", ["clock"], buckets=buckets, registry=registry)
    batched = Histogram("batched_seconds", "", ["clock"], buckets=buckets, registry=registry)
    batch = HistogramBatch(batched.labels(clock="wall"))
    rng = random.Random(5)
    for i in range(1000):
        value = rng.choice([0.001, 0.01, 1.0, 5.0, rng.random() / 10])
        one.labels(clock="wall").observe(value)
        batch.observe(value)
        if i % 97 == 0:
            batch.flush()
    batch.flush()
    for le in ("0.001", "0.01", "0.1", "1.0", "+Inf"):
        labels = {"clock": "wall", "le": le}
        assert registry.get_sample_value("batched_seconds_bucket", labels) == (
            registry.get_sample_value("one_seconds_bucket", labels)
        )
    assert registry.get_sample_value("batched_seconds_count", {"clock": "wall"}) == 1000
    assert registry.get_sample_value("batched_seconds_sum", {"clock": "wall"}) == pytest.approx(
        registry.get_sample_value("one_seconds_sum", {"clock": "wall"})
    )


@pytest.mark.parametrize(
    "draw",
    [
        lambda rng: rng.lognormvariate(0.0, 2.0),  # latency-like: a long right tail
        lambda rng: rng.uniform(0.0, 100.0),
        lambda rng: rng.choice([0.0, 0.0, 2.5, 1e9]),  # zeros, ties, a huge outlier
        lambda rng: rng.expovariate(1.0) * 1e-5,  # below a microsecond, some at LOWEST and under
        lambda rng: rng.choice([0.5, 2.0, math.inf, -1.0, 1e20]),  # outside the buckets' range
    ],
)
def test_latency_histogram_is_within_half_a_percent_of_the_exact_quantile(draw: Any) -> None:
    rng = random.Random(11)
    histogram = LatencyHistogram()
    seen: list[float] = []
    for n in (1, 7, 5000, 12_345):  # before, at and across the bulk folds
        for _ in range(n):
            value = draw(rng)
            histogram.update(value)
            seen.append(value)
        seen.sort()
        summary = histogram.summary()
        assert summary["count"] == len(seen)
        assert summary["max"] == max(0.0, seen[-1])
        for q in (0.5, 0.9, 0.99):
            exact = seen[math.ceil(q * len(seen)) - 1]
            got = summary[f"p{round(q * 100)}"]
            if LatencyHistogram.LOWEST < exact <= LatencyHistogram.HIGHEST:
                assert abs(got / exact - 1) <= math.sqrt(LatencyHistogram.GROWTH) - 1 + 1e-12
            elif exact > LatencyHistogram.HIGHEST:
                assert got > LatencyHistogram.HIGHEST  # past the last bucket: at least its edge
            else:
                assert seen[0] <= got <= LatencyHistogram.LOWEST  # at or below a nanosecond


def test_latency_histogram_before_any_value_reports_zeros() -> None:
    assert LatencyHistogram().summary() == {
        "count": 0,
        "p50": 0.0,
        "p90": 0.0,
        "p99": 0.0,
        "max": 0.0,
    }


def test_latency_histogram_pickles_its_buckets_and_goes_on_the_same() -> None:
    rng = random.Random(5)
    values = [rng.lognormvariate(1.0, 2.0) for _ in range(9_000)] + [0.0, math.inf]
    histogram = LatencyHistogram()
    for value in values[:6_000]:
        histogram.update(value)
    copy = pickle.loads(pickle.dumps(histogram))
    assert len(pickle.dumps(histogram)) < 10_000  # non-empty buckets only, not all ~4,400
    for value in values[6_000:]:
        histogram.update(value)
        copy.add(value)  # the batch path: add, then tidy once per batch
    copy.tidy()
    assert copy.summary() == histogram.summary()
    assert (copy.counts == histogram.counts).all() and copy.minimum == histogram.minimum


@pytest.mark.parametrize("count", [0, 1, 2, 3, 10, 99, 100, 101, 1_000, 123_457])
def test_latency_histogram_from_a_summary_reports_that_summary(count: int) -> None:
    # P² estimates can cross at small counts: the carried-over steps never go down.
    old = {"count": count, "p50": 30.0, "p90": 20.0, "p99": 400.0, "max": 900.0}
    summary = LatencyHistogram.from_summary(old).summary()
    assert summary["count"] == count
    if not count:
        assert summary == LatencyHistogram().summary()
        return
    steps = {"p50": 30.0, "p90": 30.0, "p99": 400.0, "max": 900.0}
    ranks = [math.ceil(q * count) for q in (0.5, 0.9, 0.99)] + [count]
    for i, key in enumerate(steps):
        # A quantile whose rank is another's (few values) reports the first step of that rank.
        expected = steps[list(steps)[ranks.index(ranks[i])]] if key != "max" else 900.0
        got = summary[key]
        assert abs(got / expected - 1) <= math.sqrt(LatencyHistogram.GROWTH) - 1, key


def test_checkpoint_compression_level_follows_the_data() -> None:
    compressible = pickle.dumps([{"id": str(i), "x": i % 7} for i in range(200_000)])
    incompressible = pickle.dumps([os.urandom(64) for _ in range(40_000)])
    assert compression_level(compressible) == 1
    assert compression_level(incompressible) == 0
    assert compression_level(b"tiny") == 1  # small states: always compressed
    for payload in (compressible, incompressible):
        blob = zlib.compress(payload, compression_level(payload))
        assert zlib.decompress(blob) == payload  # the unchanged load path reads both


def test_metric_made_fresh_is_what_the_plan_updates() -> None:
    ev = Evaluator("Accuracy", (), window=3)
    ev.update(True, {True: 0.9, False: 0.1}, False, False)
    ev.reset_windows()  # a drift: fresh windows, the plan for them is worked out again
    ev.update(True, {True: 0.9, False: 0.1}, False, False)
    assert ev.windowed() == {"model": 1.0, "fallback": 0.0, "size": 1}
    assert isinstance(ev.window_model.metric, type(make_metric("Accuracy")))


def test_joined_ids_stay_bounded_without_a_ttl() -> None:
    buf = JoinBuffer(ttl_events=None, max_pending=3)
    for n in range(1, 11):
        buf.add_event(Pending(str(n), float(n), {}, None, None, None), n)
        buf.match(str(n))
    assert list(buf.joined) == ["8", "9", "10"]
    assert buf.match("10") is DUPLICATE


@pytest.mark.parametrize(
    ("ttl_events", "ttl_seconds", "max_pending"),
    [(30, None, 1000), (30, None, 12), (5, None, 8), (40, None, 3), (None, None, 6), (25, 0.7, 20)],
)
@pytest.mark.parametrize("seed", range(4))
def test_join_horizon_skips_only_what_would_not_expire(
    ttl_events: int | None, ttl_seconds: float | None, max_pending: int, seed: int
) -> None:
    """Every operation, in random order and mixes (labels before and long after their events,
    in any order, duplicates, evictions, the buffer drained, checkpoints): the buffer answers
    what one that looks every time answers."""
    buf = JoinBuffer(ttl_events, ttl_seconds, max_pending=max_pending)
    rng = random.Random(seed)
    watermark = float("-inf")
    n = 0
    gone = [0, 0, 0]
    for step in range(8000):
        if step % 400 == 0:  # a new mix of operations
            p_event, p_match, p_park = rng.random(), rng.random(), rng.random() / 3
            total = p_event + p_match + p_park + 0.05
            p_event, p_match, p_park = p_event / total, p_match / total, p_park / total
        op = rng.random()
        if op < p_event:
            n += rng.choice([1, 1, 1, 2, 7])  # events the core did not buffer (duplicates)
            ts = n * 0.1 + rng.uniform(-0.5, 0.5)
            watermark = max(watermark, ts)
            buf.add_event(Pending(f"e{n}", ts, {}, None, None, None), n)
        elif op < p_event + p_match:
            if buf.pending and rng.random() < 0.7:
                buf.match(rng.choice(list(buf.pending)))  # any waiting event, oldest or not
            else:
                buf.match(f"e{n - rng.randint(0, 3 * (ttl_events or 20))}")
        elif op < p_event + p_match + p_park:
            label = Label(id=f"e{n + rng.randint(1, 5)}", ts=max(watermark, 0.0), label=True)
            if buf.match(label.id) is None:
                buf.park_label(label, n)
        else:
            n += rng.randint(0, 2 * (ttl_events or 20))  # a gap: the fronts come due
        if step % 500 == 0:
            buf = pickle.loads(pickle.dumps(buf))
        expected = reference_expire(buf, watermark, n)
        joined_before = list(buf.joined)
        events, labels = buf.expire(watermark, n)
        assert [p.id for p in events] == expected[0]
        assert [p.label.id for p in labels] == expected[1]
        assert list(buf.joined) == joined_before[len(expected[2]) :]
        for i, queue in enumerate(expected):
            gone[i] += len(queue)
    if ttl_events is not None:
        assert all(gone), gone  # each queue's expiry was exercised


def confusion_state(metric: Any) -> tuple[Any, ...]:
    """Everything a River confusion matrix holds, in its dicts' order."""
    cm = metric.cm
    data = [(y, list(row.items())) for y, row in cm.data.items()]
    return (
        data,
        list(cm.sum_row.items()),
        list(cm.sum_col.items()),
        cm.n_samples,
        cm.total_weight,
        cm.total_true_positives,
        type(cm.total_weight),
    )


@pytest.mark.parametrize("classes", [(True, False), ("a", "b", "c", "d", "e"), (0, 1, 2)])
def test_counted_labels_leave_the_matrices_river_leaves(classes: tuple[Any, ...]) -> None:
    """Labels counted and scored in bulk: every cell, sum and count as one update per label,
    whenever the metrics are read (and across checkpoints)."""
    fast = Evaluator("Accuracy", ("MacroF1", "MicroF1"), window=15)
    slow = ReferenceEvaluation(fast.names, window=15)
    rng = random.Random(len(classes))
    for i in range(3000):
        y = rng.choice(classes)
        weights = [rng.random() for _ in classes]
        model = None if i % 19 == 0 else dict(zip(classes, weights, strict=True))
        fallback = None if i % 11 == 0 else rng.choice(classes)
        served = rng.choice([model, fallback, rng.choice(classes), None])
        fast.update(y, model, fallback, served)
        slow.update(y, model, fallback, served)
        if rng.random() < 0.01:
            assert fast.values() == slow.values()
        if rng.random() < 0.005:
            fast = pickle.loads(pickle.dumps(fast))
    assert fast.values() == slow.values()
    assert fast.windowed() == slow.windowed()
    for role, by_name in slow.cumulative.items():
        for name, metric in by_name.items():
            assert confusion_state(fast.cumulative[role][name]) == confusion_state(metric)


def test_an_unhashable_label_fails_where_river_does() -> None:
    ev = Evaluator("Accuracy", (), window=5)
    ev.update(True, {True: 0.9, False: 0.1}, False, False)
    with pytest.raises(TypeError):
        ev.update(["not", "a", "label"], {True: 0.9, False: 0.1}, False, False)
    with pytest.raises(TypeError):  # as before: adapting the answer raises, nothing is scored
        ev.update(True, {True: 0.9, False: 0.1}, False, ["not", "a", "label"])
    # What the code before counting left (River's update counts the sample, then fails).
    assert [ev.cumulative[role]["Accuracy"].cm.n_samples for role in ev.ROLES] == [2, 1, 1]
    assert ev.values() == {
        "model": {"Accuracy": 1.0},
        "fallback": {"Accuracy": 0.0},
        "served": {"Accuracy": 0.0},
    }
    assert ev.windowed() == {"model": 1.0, "fallback": 0.0, "size": 1}
