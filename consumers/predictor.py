"""``riverline predictor``: one of any number of processes serving predictions.

The predictors of a pipeline share one consumer group over the events topic. Each validates,
predicts with the newest model version the learner published (swapped between records, loaded
off the event path by :class:`~pipeline.serving.watcher.ModelWatcher`), runs the fallback
chain, and publishes predictions and dead letters. It commits its group offsets only after the
broker acknowledged every output they cover: after a crash every event still gets a
prediction, and some get theirs twice (same id; downstream deduplicates by id).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import redis

from consumers.checkpointer import require_secret
from consumers.gc_policy import tune_for_streaming
from consumers.idleness import IdleStop
from consumers.inputs import Inputs
from consumers.outputs import Outputs
from consumers.processing import PredictionProcessor, is_infrastructure
from consumers.signals import StopFlag
from consumers.status import StatusBoard, active_seconds, lag_view
from pipeline.checkpointing.model_versions import ModelVersionStore
from pipeline.checkpointing.store import Offsets
from pipeline.config import RiverlineConfig
from pipeline.kafka.records import KIND_EVENT
from pipeline.kafka.transport import DELIVERY_TIMEOUT_MS, Partition, make_transport
from pipeline.ordering import OrderedMerge
from pipeline.serving.predictor_core import ServingCore
from pipeline.serving.watcher import ModelWatcher
from pipeline.state.lease import default_owner
from pipeline.telemetry import PipelineMetrics
from pipeline.validation import Validator

log = logging.getLogger(__name__)


def predictor_group(name: str) -> str:
    """The predictors' consumer group: apart from the learner's, which reads the same events."""
    return f"{name}.predictors"


class Predictor:
    """Inputs (events), the serving core on hot model versions, outputs, commits, status."""

    role = "predictor"

    def __init__(
        self,
        config: RiverlineConfig,
        bootstrap: str,
        redis_client: redis.Redis,
        *,
        until_idle: float | None = None,
        stop: StopFlag | None = None,
        consumer_options: dict[str, Any] | None = None,
        producer_options: dict[str, Any] | None = None,
        owner: str | None = None,
    ) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self.topics = config.kafka.topics
        self.until_idle = until_idle
        self.stop = stop or StopFlag()
        self.consumer_options = consumer_options or {}
        self.producer_options = producer_options or {}
        self.owner = owner or default_owner()
        require_secret(config)  # model versions are pickles, signed like checkpoints
        self.models = ModelVersionStore.for_config(redis_client, config)
        self.serving = ServingCore(config, None)
        self.watcher = ModelWatcher(
            self.models, config.serving.poll_seconds, accept=self.serving.check
        )
        self.assigned = threading.Event()  # new partitions: check for a newer version first
        self.metrics = PipelineMetrics()
        self.status = StatusBoard(
            self.metrics,
            redis_client,
            f"riverline:{config.name}:predictor:{self.owner}",
            config.telemetry.status_every_seconds,
            # A stopped or killed predictor's entry goes soon: `status` lists the live ones.
            ttl_seconds=max(30, int(10 * config.telemetry.status_every_seconds)),
        )
        self.lock = threading.RLock()  # the merge and the offsets
        self.offsets: Offsets = {}  # next offset per partition, of the records processed
        self.committed: Offsets = {}
        self.committed_at = time.monotonic()
        self.inputs: Inputs | None = None
        self.outputs: Outputs | None = None
        self.processor: PredictionProcessor | None = None
        self.started = time.monotonic()
        self.swaps = 0
        self.metrics.readiness = self.ready

    @property
    def metrics_port(self) -> int | None:
        return self.status.port

    @property
    def lags(self) -> dict[Partition, int | None]:
        return self.inputs.lags if self.inputs is not None else {}

    def ready(self) -> tuple[bool, str]:
        """Serving: partitions assigned (and a model version, once the learner published one)."""
        if self.inputs is None or not self.inputs.assignment():
            return False, "no partition assigned yet"
        return True, f"serving model version {self.serving.model_version}"

    def run(self) -> dict[str, Any]:
        transport = make_transport(self.config.kafka, self.bootstrap)
        t = self.topics
        transport.ensure_topics([t.events, t.predictions, t.dead_letters])
        self.status.serve(self.config.telemetry.prometheus_port)
        self.watcher.start()
        delivery_ms = self.producer_options.get("delivery_timeout_ms", DELIVERY_TIMEOUT_MS)
        self.outputs = Outputs(
            lambda: transport.producer(**self.producer_options),
            self.topics,
            self.config.name,
            transport.partition_count(self.topics.predictions) or 0,
            flush_timeout_s=delivery_ms / 1000 + 5,
            max_message_bytes=self.config.kafka.max_message_bytes,
        )
        self.processor = PredictionProcessor(self.serving, self.outputs, self.metrics)
        validator = Validator(self.config.validation, regression=not self.serving.classifier)
        self.inputs = Inputs(
            transport.consumer(predictor_group(self.config.name), **self.consumer_options),
            {self.topics.events: KIND_EVENT},
            validator,
            # Serving needs no order across partitions: never wait for an idle one.
            OrderedMerge(0),
            self.lock,
            self.metrics,
            lambda _partition: None,  # the group's committed offset, else the reset policy
        )
        self.inputs.on_revoked_hooks.append(self._forget)
        self.inputs.on_assigned_hooks.append(lambda _partitions: self.assigned.set())
        self.inputs.subscribe()
        tune_for_streaming()
        try:
            self._loop()
            self._commit(final=True)
            self.publish_status()
        finally:
            self.watcher.stop()
            self.inputs.close()
            self.outputs.close()
        return self.report()

    def _forget(self, revoked: list[Partition]) -> None:
        # Another predictor reads these from the committed offsets now.
        for partition in revoked:
            self.offsets.pop(partition, None)
            self.committed.pop(partition, None)

    def _loop(self) -> None:
        inputs = self.inputs
        assert inputs is not None
        idle = IdleStop(self.until_idle, inputs)
        while not self.stop.is_set():
            fetched = inputs.fetch()
            self._swap_if_newer()
            processed = self._drain()
            now = time.monotonic()
            group, bound = predictor_group(self.config.name), self.config.kafka.join_timeout_seconds
            inputs.check_joined(now, bound, group)
            if now - self.committed_at >= self.config.serving.commit_every_seconds:
                self._commit()
            if self.status.due(now):
                self.publish_status(now)
            if idle.after_turn(now, fetched, processed):
                return

    def _swap_if_newer(self) -> None:
        """Between records only: a record is served by one whole model version."""
        if self.assigned.is_set():
            self.assigned.clear()
            self.watcher.refresh()
        snapshot = self.watcher.take()
        if snapshot is None:
            return
        before = self.serving.model_version
        self.serving.swap(snapshot)
        self.swaps += 1
        assert self.processor is not None
        if self.processor.last_record_at is not None:
            # Timed only while serving: a version taken during the group join would count
            # the join as delay.
            self.processor.awaiting_first_use[snapshot.version] = snapshot.created_at
        log.info("model version %d -> %d (mode %s)", before, snapshot.version, snapshot.gating.mode)

    def _drain(self) -> int:
        inputs, processor, offsets = self.inputs, self.processor, self.offsets
        assert inputs is not None and processor is not None
        processed = 0
        with self.lock:
            while (item := inputs.pop()) is not None:
                try:
                    processor.process(item.payload)
                except Exception as e:
                    # No single record may stop serving; only the infrastructure may.
                    if is_infrastructure(e):
                        raise
                    processor.failed(item.payload, e)
                offsets[item.partition] = item.offset + 1  # type: ignore[index]
                processed += 1
                if self.stop.is_set():
                    break
        if processed:
            processor.last_record_at = time.monotonic()
            self.metrics.flush()
        return processed

    def _commit(self, final: bool = False) -> None:
        """Commit what is acknowledged: outputs first, then the offsets they cover."""
        assert self.outputs is not None and self.inputs is not None
        self.committed_at = time.monotonic()
        with self.lock:
            offsets = dict(self.offsets)
        if offsets == self.committed:
            return
        if not self.outputs.flush(attempts=3 if final else None):
            log.error("outputs not acknowledged by the broker: offsets not committed")
            return
        try:
            self.inputs.commit(offsets, wait=final)
        except Exception as e:  # read again after a restart: more duplicates, nothing lost
            log.warning("could not commit offsets: %s", e)
            return
        self.committed = offsets

    def publish_status(self, now: float | None = None) -> None:
        processor = self.processor
        assert processor is not None
        self.metrics.flush()
        explainer = self.serving.explainer
        explain = (
            explainer.report(time.monotonic() - self.started) if explainer is not None else None
        )
        self.metrics.sync_counters(
            {
                "events": self.serving.events,
                "labels": 0,
                "expired_unlabelled": 0,
                "drift": 0,
                "served_by": self.serving.served_by,
                "dead_letters": processor.dead_letters,
                "explain": explain,
            }
        )
        snapshot = self.serving.snapshot
        mode = snapshot.gating.mode if snapshot is not None else "cold"
        for name in ("cold", "shadow", "serving"):
            self.metrics.mode.labels(mode=name).set(1 if mode == name else 0)
        self.metrics.model_version.set(self.serving.model_version)
        ready, why = self.ready()
        status = {
            "pipeline": self.config.name,
            "role": self.role,
            "owner": self.owner,
            "mode": mode,
            "model_version": self.serving.model_version,
            "events": self.serving.events,
            "predictions_by_source": dict(self.serving.served_by),
            "dead_letters": dict(processor.dead_letters),
            "lag": lag_view(self.lags),
            "latency_ms": processor.latency_ms.summary(),
            "ready": ready,
            "ready_reason": why,
            "explain": explain,
        }
        with contextlib.suppress(redis.RedisError):
            self.status.publish(status, now)

    def report(self) -> dict[str, Any]:
        processor, inputs = self.processor, self.inputs
        assert processor is not None
        snapshot = self.serving.snapshot
        return {
            "role": self.role,
            "pipeline": self.config.name,
            "events": self.serving.events,
            "predictions_by_source": dict(sorted(self.serving.served_by.items())),
            "dead_letters": dict(sorted(processor.dead_letters.items())),
            "model_version": self.serving.model_version,
            "mode": snapshot.gating.mode if snapshot is not None else "cold",
            "model_swaps": self.swaps,
            "model_errors": self.serving.model_errors,
            "run": {
                "role": self.role,
                "records": inputs.records if inputs else 0,
                "published_predictions": self.outputs.published if self.outputs else 0,
                "seconds": round(time.monotonic() - self.started, 3),
                "active_seconds": round(
                    active_seconds(
                        inputs.first_record_at if inputs else None, processor.last_record_at
                    ),
                    3,
                ),
                "latency_ms": {
                    "event_to_prediction": processor.latency_ms.summary(),
                    "processing": processor.processing_ms.summary(),
                    "model_version_to_first_use": processor.version_to_first_use_ms.summary(),
                },
            },
        }
