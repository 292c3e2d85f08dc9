"""What a role tells the outside: Prometheus gauges, the ``status`` hash in Redis that
``riverline status`` reads, and the report printed at the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any

import redis

from pipeline.core import LearningCore
from pipeline.kafka.transport import Partition
from pipeline.telemetry import PipelineMetrics

log = logging.getLogger(__name__)


class StatusBoard:
    """The gauges and the status hash of one role process, refreshed every few seconds."""

    def __init__(
        self,
        metrics: PipelineMetrics,
        client: redis.Redis,
        key: str,
        every_seconds: float,
        ttl_seconds: int = 86_400,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.metrics = metrics
        self.client = client
        self.key = key
        self.every_seconds = every_seconds
        self.port: int | None = None
        self.updated_at = 0.0
        self.started = time.monotonic()

    def serve(self, port: int | None) -> None:
        """Expose /metrics on ``port`` (0: a free one) when one is configured."""
        if port is not None:
            self.port = self.metrics.serve(port)
            log.info("metrics on http://0.0.0.0:%d/metrics", self.port)

    def due(self, now: float) -> bool:
        return now - self.updated_at >= self.every_seconds

    def publish(self, status: dict[str, Any], now: float | None = None) -> None:
        """Write ``status`` where ``riverline status`` finds it (kept a day)."""
        self.updated_at = time.monotonic() if now is None else now
        status["metrics_port"] = self.port
        status["updated_at"] = time.time()
        # During an outage the checkpoint path reports it; the status just waits.
        with contextlib.suppress(redis.RedisError):
            self.client.set(self.key, json.dumps(status, default=str), ex=self.ttl_seconds)

    def learning_gauges(self, core: LearningCore, redis_healthy: bool) -> dict[str, Any]:
        """Refresh the learning gauges; returns the learning part of the status."""
        state = core.state
        metrics = self.metrics
        metrics.flush()
        # A learner serves nothing itself: count what the predictors published.
        served_by = state.served_join.by_source if state.served_join else state.served_by
        explainer = core.server.explainer
        explain = (
            explainer.report(time.monotonic() - self.started) if explainer is not None else None
        )
        metrics.sync_counters(
            {
                "events": state.events,
                "labels": state.labels,
                "served_by": served_by,
                "dead_letters": state.dead_letters,
                "expired_unlabelled": state.expired_unlabelled,
                "drift": len(state.drift_events),
                "explain": explain,
            }
        )
        review = state.review.report() if state.review is not None else {}
        metrics.sync_review(review)
        importance = None
        if state.importance is not None:
            importance = state.importance.top(10)
            metrics.sync_importance(state.importance.top(20))
        for mode in ("cold", "shadow", "serving"):
            metrics.mode.labels(mode=mode).set(1 if state.gating.mode == mode else 0)
        metrics.model_version.set(core.model_version)
        metrics.labels_seen.set(state.labels)
        metrics.join_buffer.set(len(state.join))
        metrics.redis_healthy.set(1 if redis_healthy else 0)
        windowed = state.evaluator.windowed()
        for role in ("model", "fallback"):
            metrics.windowed.labels(role=role).set(float(windowed[role]))
        slices = state.evaluator.slice_values()
        by_slice = {
            value: {role: by_name[slices["metric"]] for role, by_name in roles.items()}
            for value, roles in slices.get("slices", {}).items()
        }
        for value, roles in by_slice.items():
            for role, metric in roles.items():
                metrics.slice_metric.labels(value=value, role=role).set(metric)
        for role, gap in slices.get("gap", {}).items():
            metrics.slice_gap.labels(role=role).set(gap)
        board = state.challengers.report()["leaderboard"] if state.challengers else []
        if board:
            # A promotion moves names between roles: the old series would stay at their last
            # values under the wrong role.
            metrics.challenger_metric.clear()
        for entry in board:
            for window, key in (("windowed", "windowed"), ("run", "metric")):
                metrics.challenger_metric.labels(
                    name=entry["name"], role=entry["role"], window=window
                ).set(entry[key])
        return {
            "mode": state.gating.mode,
            "model_version": core.model_version,
            "events": state.events,
            "labels": state.labels,
            "metric": state.evaluator.names[0],
            "windowed": windowed,
            "promotions": [d.as_dict() for d in state.gating.promotions[-5:]],
            "demotions": [d.as_dict() for d in state.gating.demotions[-5:]],
            "drift": state.drift_events[-5:],
            "slices_attribute": slices.get("attribute"),
            "slices": by_slice,
            "slices_gap": slices.get("gap", {}),
            "challengers": board,
            "review": review,
            "redis_healthy": redis_healthy,
            "explain": explain,
            "importance": importance,
            "importance_by_slice": (
                state.importance.top_by_slice(3) if state.importance is not None else None
            ),
        }


def lag_view(lags: dict[Partition, int | None]) -> dict[str, int | None]:
    return {f"{t}[{p}]": lag for (t, p), lag in sorted(lags.items())}


def active_seconds(first: float | None, last: float | None) -> float:
    """From the first record fetched to the last one processed."""
    return last - first if first is not None and last is not None else 0.0
