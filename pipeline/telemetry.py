"""Latency as a distribution: streaming p50/p90/p99 in constant memory, from a log-bucket
histogram (:class:`LatencyHistogram`: within 0.5% of the exact quantile).

:class:`LatencyQuantiles` (River's P² estimates) is what the review state's time to answer was
before: it stays so that older checkpoints unpickle, and they carry it over into a histogram
(:meth:`LatencyHistogram.from_summary`).

>>> lat = LatencyQuantiles()
>>> for ms in range(1, 1001):
...     lat.update(float(ms))
>>> summary = lat.summary()
>>> summary["count"], round(summary["p50"]), round(summary["p90"]), round(summary["p99"])
(1000, 500, 900, 990)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from river import stats

from pipeline.health import HealthServer, Readiness

QUANTILES = (0.5, 0.9, 0.99)


class LatencyQuantiles:
    """River's P² estimates of p50/p90/p99 (three updates per value; see
    :class:`LatencyHistogram` for how far off they may be). Only older checkpoints hold one."""

    def __init__(self) -> None:
        self.estimators = {q: stats.Quantile(q) for q in QUANTILES}
        self.count = 0
        self.maximum = 0.0

    def update(self, value: float) -> None:
        self.count += 1
        self.maximum = max(self.maximum, value)
        for estimator in self.estimators.values():
            estimator.update(value)

    def summary(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {"count": self.count}
        for q, estimator in self.estimators.items():
            value = estimator.get()
            out[f"p{round(q * 100)}"] = float(value) if value is not None and self.count else 0.0
        out["max"] = self.maximum
        return out


class LatencyHistogram:
    """p50/p90/p99 (and count, max) of non-negative values, from a fixed log-bucket histogram.

    The buckets' edges are the powers of ``G = 1.01``, from a nanosecond to three centuries in
    milliseconds (``LOWEST`` and below: one bucket, reported as 0); a
    quantile is reported as the geometric middle of the bucket that holds its rank, kept within
    the smallest and largest value seen. So the quantile of rank ``ceil(q * count)`` comes back
    within ``sqrt(G) - 1`` (0.5%) of its value; River's P² estimate, one per quantile, may be off
    by much more (15% on a latency run's p50) and costs three updates per value.

    ``update`` only appends: values are put into buckets by the thousand, with numpy.

    >>> lat = LatencyHistogram()
    >>> for ms in range(1, 1001):
    ...     lat.update(float(ms))
    >>> summary = lat.summary()
    >>> summary["count"], summary["max"]
    (1000, 1000.0)
    >>> [round(summary[p], 1) for p in ("p50", "p90", "p99")]  # exactly: 500, 900, 990
    [499.7, 898.8, 992.8]
    """

    GROWTH = 1.01
    LOWEST = 1e-6
    HIGHEST = 1e13
    _SCALE = 1.0 / math.log(GROWTH)
    _OFFSET = 1 - math.floor(math.log(LOWEST) * _SCALE)
    BUCKETS = _OFFSET + math.ceil(math.log(HIGHEST) * _SCALE) + 1
    _FOLD_EVERY = 4096

    def __init__(self) -> None:
        self.counts = np.zeros(self.BUCKETS, dtype=np.int64)
        self.count = 0
        self.maximum = 0.0
        self.minimum = math.inf
        self._pending: list[float] = []
        # ``update`` without its fold (a list's append, no Python call), for a caller that
        # calls ``tidy`` once per batch of values.
        self.add: Callable[[float], None] = self._pending.append

    @classmethod
    def from_summary(cls, summary: dict[str, float | int]) -> LatencyHistogram:
        """A histogram that reports ``summary`` (``count``, ``p50``, ``p90``, ``p99``, ``max``)
        within 0.5%, and goes on from there: the count as steps at the given quantiles.

        For carrying River's P² estimates over, which keep nothing more to build from.

        >>> old = {"count": 200, "p50": 12.0, "p90": 40.0, "p99": 95.0, "max": 130.0}
        >>> lat = LatencyHistogram.from_summary(old)
        >>> {k: round(v) for k, v in lat.summary().items()}
        {'count': 200, 'p50': 12, 'p90': 40, 'p99': 95, 'max': 130}
        >>> lat.update(1000.0)
        >>> lat.summary()["count"], lat.summary()["max"]
        (201, 1000.0)
        """
        out = cls()
        count = int(summary.get("count", 0))
        if count <= 0:
            return out
        steps: list[tuple[int, float]] = []  # (the rank a step reaches, its value)
        floor = 0.0
        for q in QUANTILES:
            # P² estimates may cross at small counts: a step never goes below the one before.
            floor = max(floor, float(summary[f"p{round(q * 100)}"]))
            steps.append((math.ceil(q * count), floor))
        steps.append((count, max(floor, float(summary.get("max", floor)))))
        values: list[float] = []
        counts: list[int] = []
        reached = 0
        for rank, value in steps:
            if rank > reached:
                values.append(value)
                counts.append(rank - reached)
                reached = rank
        np.add.at(out.counts, cls._indices(np.array(values, dtype=np.float64)), counts)
        out.count = count
        out.minimum = steps[0][1]
        out.maximum = steps[-1][1]
        return out

    @classmethod
    def _indices(cls, values: np.ndarray) -> np.ndarray:
        """Each value's bucket: anything at or below LOWEST the first, beyond HIGHEST the last."""
        index = np.floor(np.log(np.fmax(values, cls.LOWEST)) * cls._SCALE) + cls._OFFSET
        index = np.fmin(np.fmax(index, 0.0), cls.BUCKETS - 1.0)
        index[values <= cls.LOWEST] = 0.0
        return index.astype(np.intp)

    def __getstate__(self) -> dict[str, Any]:
        # Checkpoints pickle a histogram: only its non-empty buckets (a few dozen of ~4,400).
        self._fold()
        nonzero = np.flatnonzero(self.counts)
        return {
            "buckets": dict(zip(nonzero.tolist(), self.counts[nonzero].tolist(), strict=True)),
            "count": self.count,
            "maximum": self.maximum,
            "minimum": self.minimum,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.counts = np.zeros(self.BUCKETS, dtype=np.int64)
        for index, n in state["buckets"].items():
            self.counts[index] = n
        self.count = state["count"]
        self.maximum = state["maximum"]
        self.minimum = state["minimum"]
        self._pending = []
        self.add = self._pending.append

    def update(self, value: float) -> None:
        pending = self._pending
        pending.append(value)
        if len(pending) >= self._FOLD_EVERY:
            self._fold()

    def tidy(self) -> None:
        """Fold the values ``add`` gathered, once there are enough to fold."""
        if len(self._pending) >= self._FOLD_EVERY:
            self._fold()

    def _fold(self) -> None:
        if not self._pending:
            return
        values = np.array(self._pending, dtype=np.float64)
        self._pending.clear()
        self.counts += np.bincount(self._indices(values), minlength=self.BUCKETS)
        self.count += len(values)
        # As max() and min() value by value: a NaN changes neither.
        self.maximum = max(self.maximum, float(np.fmax.reduce(values)))
        self.minimum = min(self.minimum, float(np.fmin.reduce(values)))

    def quantile(self, q: float) -> float:
        """The value of rank ``ceil(q * count)``, within 0.5%; 0.0 before any value."""
        self._fold()
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        bucket = int(np.searchsorted(np.cumsum(self.counts), rank))
        middle = 0.0 if bucket == 0 else self.GROWTH ** (bucket - self._OFFSET + 0.5)
        return min(max(middle, self.minimum), self.maximum)

    def summary(self) -> dict[str, float | int]:
        self._fold()
        out: dict[str, float | int] = {"count": self.count}
        for q in QUANTILES:
            out[f"p{round(q * 100)}"] = self.quantile(q)
        out["max"] = self.maximum
        return out


class HistogramBatch:
    """Observations for one Prometheus histogram (or labelled child), handed over per batch.

    ``observe`` is a list's append (no Python call, no lock); ``flush`` observes the batch's
    values on the histogram, through prometheus_client's public ``observe``. Flush once per
    batch: the values wait in a list until then.

    >>> from prometheus_client import CollectorRegistry, Histogram
    >>> registry = CollectorRegistry()
    >>> hist = Histogram("t_seconds", "test", buckets=(0.1, 1.0), registry=registry)
    >>> batch = HistogramBatch(hist)
    >>> for value in (0.05, 0.1, 0.5, 3.0):
    ...     batch.observe(value)
    >>> registry.get_sample_value("t_seconds_count")
    0.0
    >>> batch.flush()
    >>> [registry.get_sample_value("t_seconds_bucket", {"le": le}) for le in ("0.1", "1.0", "+Inf")]
    [2.0, 3.0, 4.0]
    >>> registry.get_sample_value("t_seconds_sum")
    3.65
    """

    def __init__(self, histogram: Any) -> None:
        self.histogram = histogram
        self.values: list[float] = []
        self.observe: Callable[[float], None] = self.values.append

    def flush(self) -> None:
        if not self.values:
            return
        values = self.values[:]
        self.values.clear()  # the same list: ``observe`` appends to it
        observe = self.histogram.observe
        for value in values:
            observe(value)


class PipelineMetrics:
    """Prometheus metrics of one consumer, on a registry of its own.

    Counters follow the learning state's own counts (synced by difference), so what /metrics
    says equals the report, also after a restart from a checkpoint.

    >>> metrics = PipelineMetrics()
    >>> metrics.sync_counters({"events": 3, "labels": 2, "served_by": {"model": 3},
    ...                        "dead_letters": {}, "expired_unlabelled": 0, "drift": 0})
    >>> metrics.registry.get_sample_value("riverline_events_total")
    3.0
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("riverline_events", "Events predicted", registry=r)
        self.labels = Counter("riverline_labels", "Labels learned from", registry=r)
        self.predictions = Counter(
            "riverline_predictions", "Predictions served, by source", ["source"], registry=r
        )
        self.dead_letters = Counter(
            "riverline_dead_letters", "Records dead-lettered, by reason", ["reason"], registry=r
        )
        self.expired = Counter(
            "riverline_expired_events", "Events that expired without a label", registry=r
        )
        self.drift = Counter("riverline_drift_detections", "Drift detections", registry=r)
        self.mode = Gauge("riverline_mode", "1 for the current gating mode", ["mode"], registry=r)
        self.model_version = Gauge("riverline_model_version", "Labels learned", registry=r)
        self.labels_seen = Gauge("riverline_labels_seen", "Labels learned from", registry=r)
        self.windowed = Gauge(
            "riverline_windowed_metric", "Windowed gating metric", ["role"], registry=r
        )
        self.lag = Gauge(
            "riverline_consumer_lag",
            "Records behind the broker",
            ["topic", "partition"],
            registry=r,
        )
        self.join_buffer = Gauge("riverline_join_buffer_size", "Events awaiting labels", registry=r)
        self.slice_metric = Gauge(
            "riverline_slice_metric", "Gating metric per slice", ["value", "role"], registry=r
        )
        self.slice_gap = Gauge(
            "riverline_slice_gap", "Best minus worst slice, gating metric", ["role"], registry=r
        )
        self.redis_healthy = Gauge("riverline_redis_healthy", "1 if Redis answers", registry=r)
        self.challenger_metric = Gauge(
            "riverline_challenger_metric",
            "Gating metric of the champion and each challenger (window: windowed or run)",
            ["name", "role", "window"],
            registry=r,
        )
        self.explanations = Counter(
            "riverline_explanations", "Model-served predictions explained", registry=r
        )
        self.importance = Gauge(
            "riverline_feature_importance",
            "Global importance (incremental permutation; the loss's rise when the feature is "
            "replaced), the top 20 features",
            ["feature"],
            registry=r,
        )
        # Its rate is the share of the process's time spent explaining.
        self.explain_seconds = Counter(
            "riverline_explain_seconds", "Time spent explaining predictions", registry=r
        )
        buckets = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 600, 3600)
        self.latency = Histogram(
            "riverline_event_to_prediction_seconds",
            "From the event (clock=event: its event time; clock=wall: its send time) to its "
            "prediction",
            ["clock"],
            buckets=buckets,
            registry=r,
        )
        fast = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1)
        self.predict_time = Histogram(
            "riverline_predict_seconds",
            "The core's event path: predict and serve",
            buckets=fast,
            registry=r,
        )
        self.learn_time = Histogram(
            "riverline_learn_seconds",
            "The core's label path: join, score, learn",
            buckets=fast,
            registry=r,
        )
        self._seen: dict[str, float] = {}
        self._importance_features: set[str] = set()
        self._init_review(r)
        # The role (run, learner, predictor) replaces this with its own check.
        self.readiness: Readiness = not_reported
        self.server: HealthServer | None = None
        # The per-record observations, children looked up once and flushed per batch.
        self.latency_wall = HistogramBatch(self.latency.labels(clock="wall"))
        self.latency_event = HistogramBatch(self.latency.labels(clock="event"))
        self.predict_batch = HistogramBatch(self.predict_time)
        self.learn_batch = HistogramBatch(self.learn_time)

    def flush(self) -> None:
        """Hand the batched per-record observations to Prometheus."""
        for batch in (self.latency_wall, self.latency_event, self.predict_batch, self.learn_batch):
            batch.flush()

    def _advance(self, key: str, total: float, counter: Any) -> None:
        delta = total - self._seen.get(key, 0.0)
        if delta > 0:
            counter.inc(delta)
            self._seen[key] = total

    def sync_counters(self, counts: dict[str, Any]) -> None:
        self._advance("events", counts["events"], self.events)
        self._advance("labels", counts["labels"], self.labels)
        self._advance("expired", counts["expired_unlabelled"], self.expired)
        self._advance("drift", counts["drift"], self.drift)
        for source, n in counts["served_by"].items():
            self._advance(f"source:{source}", n, self.predictions.labels(source=source))
        for reason, n in counts["dead_letters"].items():
            self._advance(f"reason:{reason}", n, self.dead_letters.labels(reason=reason))
        explain = counts.get("explain")
        if explain:
            self._advance("explained", explain["explained"], self.explanations)
            self._advance("explain_seconds", explain["seconds"], self.explain_seconds)

    def sync_importance(self, values: dict[str, float]) -> None:
        """The top features' importance; a feature that left the top is dropped, so that the
        label set stays bounded however many features a stream brings."""
        shown = dict(list(values.items())[:20])
        for feature in set(self._importance_features) - set(shown):
            self.importance.remove(feature)
        for feature, value in shown.items():
            self.importance.labels(feature=feature).set(value)
        self._importance_features = set(shown)

    def _init_review(self, r: Any) -> None:
        """Humans in the loop: requests, answers, who taught the model, how fast people are."""
        from prometheus_client import Counter, Gauge

        self.review_requests = Counter(
            "riverline_review_requests",
            "Review requests by outcome: sent, answered, expired, skipped_budget, "
            "skipped_pending, late_answers",
            ["outcome"],
            registry=r,
        )
        self.labels_by_source = Counter(
            "riverline_labels_learned",
            "Labels learned from, by source (ground_truth, human)",
            ["source"],
            registry=r,
        )
        self.review_pending = Gauge(
            "riverline_review_pending", "Requests awaiting an answer", ["held"], registry=r
        )
        self.human_metric = Gauge(
            "riverline_human_metric",
            "People's answers scored against ground truth",
            ["metric"],
            registry=r,
        )
        self.time_to_answer = Gauge(
            "riverline_review_time_to_answer_seconds",
            "From request to answer (streaming quantiles)",
            ["quantile"],
            registry=r,
        )

    def sync_review(self, review: dict[str, Any]) -> None:
        """Follow the core's review report (``LearningCore.report()["review"]``).

        >>> metrics = PipelineMetrics()
        >>> metrics.sync_review({"sent": 4, "answered": 3, "pending": 1, "held": 0,
        ...     "labels_by_source": {"human": 3}, "human_metrics": {"Accuracy": 1.0},
        ...     "human_scored": 2, "time_to_answer_s": {"count": 0}})
        >>> metrics.registry.get_sample_value(
        ...     "riverline_review_requests_total", {"outcome": "answered"})
        3.0
        """
        if not review:
            return
        for outcome in (
            "sent",
            "answered",
            "expired",
            "skipped_budget",
            "skipped_pending",
            "late_answers",
        ):
            self._advance(
                f"review:{outcome}",
                review.get(outcome, 0),
                self.review_requests.labels(outcome=outcome),
            )
        for source, n in review.get("labels_by_source", {}).items():
            self._advance(f"learned:{source}", n, self.labels_by_source.labels(source=source))
        held = int(review.get("held", 0))
        self.review_pending.labels(held="yes").set(held)
        self.review_pending.labels(held="no").set(int(review.get("pending", 0)) - held)
        if review.get("human_scored"):
            for name, value in review.get("human_metrics", {}).items():
                self.human_metric.labels(metric=name).set(value)
        answer = review.get("time_to_answer_s", {})
        if answer.get("count"):
            for q in ("p50", "p90", "p99"):
                self.time_to_answer.labels(quantile=q).set(answer[q])

    def serve(self, port: int) -> int:
        """Expose /metrics, /healthz and /readyz on ``port`` (0: a free one); returns the port.

        /readyz asks :attr:`readiness` at each request, so a role may set it at any time.
        """
        self.server = HealthServer(self.registry, port, lambda: self.readiness())
        return self.server.port


def not_reported() -> tuple[bool, str]:
    """The readiness of a process whose role has not said yet: not ready."""
    return False, "starting: readiness not reported yet"


def serve_registry(registry: Any, port: int, readiness: Readiness | None = None) -> int:
    """Serve a registry's /metrics, /healthz and /readyz on ``port`` (0: a free one).

    Returns the port. Without ``readiness``, /readyz answers like /healthz (a one-shot job
    such as ``replay`` is ready as long as it runs).
    """
    return HealthServer(registry, port, readiness or _alive).port


def _alive() -> tuple[bool, str]:
    return True, "alive"


class ReplayMetrics:
    """Prometheus metrics of a replay: what it published, and how far in event time it is.

    >>> metrics = ReplayMetrics()
    >>> metrics.emitted("event", 1_700_000_000.0)
    >>> metrics.emitted("label", 1_700_000_001.0)
    >>> metrics.registry.get_sample_value("riverline_replay_published_total", {"kind": "event"})
    1.0
    >>> metrics.registry.get_sample_value("riverline_replay_event_time_seconds")
    1700000001.0
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        self.published = Counter(
            "riverline_replay_published",
            "Records the replay published, by kind (event, label)",
            ["kind"],
            registry=self.registry,
        )
        self.skipped = Counter(
            "riverline_replay_skipped_rows", "Malformed rows skipped", registry=self.registry
        )
        self.event_time = Gauge(
            "riverline_replay_event_time_seconds",
            "Event time of the latest record published",
            registry=self.registry,
        )
        self._published: dict[str, Any] = {}

    def emitted(self, kind: str, ts: float, count: int = 1) -> None:
        """``count`` records of ``kind`` published, the latest at event time ``ts``."""
        # The labelled child kept: labels() looks it up under a lock, which was a tenth of a
        # full-speed `riverline replay`. Made at first use, as labels() would.
        counter = self._published.get(kind)
        if counter is None:
            counter = self._published[kind] = self.published.labels(kind=kind)
        counter.inc(count)
        self.event_time.set(ts)
