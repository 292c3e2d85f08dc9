"""The all-in-one consumer: events and labels in, predictions out, state checkpointed to Redis.

Redis, not the consumer group, decides where reading resumes: on every partition assignment
the consumer seeks to the checkpointed next offsets, so everything after the last checkpoint is
read again in the same order and the state after recovery equals that of a run that never
stopped. Predictions published after the last checkpoint may therefore be published twice
(at-least-once, with identical content); downstream deduplicates by event id.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from consumers.signals import StopFlag
from pipeline.checkpointing.store import CheckpointStore, Fenced, Offsets
from pipeline.config import ConfigError, RiverlineConfig
from pipeline.core import LearningCore, Outcome
from pipeline.gating import Decision
from pipeline.kafka.outputs import DurableOutputs
from pipeline.kafka.records import KIND_EVENT, KIND_LABEL, Incoming, Origin, to_item
from pipeline.kafka.transport import DELIVERY_TIMEOUT_MS, Partition, make_transport
from pipeline.ordering import OrderedMerge
from pipeline.schemas import DeadLetter, Event, InvalidRecord, ReviewRequest, encode
from pipeline.state.lease import Lease, LeaseLost
from pipeline.telemetry import LatencyQuantiles, PipelineMetrics
from pipeline.validation import Validator

log = logging.getLogger(__name__)


def require_secret(config: RiverlineConfig) -> bytes | None:
    """Checkpoints are pickles: without a signing secret, refuse unless told it is fine."""
    secret = config.checkpoint.secret_bytes()
    if secret is None and not config.checkpoint.insecure:
        raise ConfigError(
            "invalid configuration:\n  checkpoint.secret: not set. Checkpoints are pickles and "
            "loading one from a writable Redis runs code, so they are signed. Set "
            "RIVERLINE_CHECKPOINT_SECRET (or checkpoint.secret), or set checkpoint.insecure: true "
            "where Redis is trusted."
        )
    return secret


@dataclass
class RunStats:
    """What this process saw; not part of the learning state."""

    started: float = field(default_factory=time.monotonic)
    records: int = 0
    published: int = 0
    checkpoints: int = 0
    checkpoint_ms: LatencyQuantiles = field(default_factory=LatencyQuantiles)
    first_record_at: float | None = None  # monotonic; joining the group is not processing
    last_record_at: float | None = None
    latency_ms: LatencyQuantiles = field(default_factory=LatencyQuantiles)
    processing_ms: LatencyQuantiles = field(default_factory=LatencyQuantiles)


class Consumer:
    """``riverline run``: one process that predicts, serves, learns and checkpoints.

    Lifecycle: wait as a standby until this process holds the pipeline's lease; restore the
    latest checkpoint; join the consumer group and seek every assigned partition to its
    checkpointed offset; then loop. A Redis outage does not stop serving: checkpoints are
    retried with backoff, and consumption pauses once ``max_unflushed_labels`` labels wait for
    one. Losing the lease to another writer stops the loop at once, without writing.
    """

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
        on_checkpoint: Callable[[int, LearningCore], None] | None = None,
        owner: str | None = None,
        reset: bool = False,
    ) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self.topics = config.kafka.topics
        self.until_idle = until_idle
        self.stop = stop or StopFlag()
        self.consumer_options = consumer_options or {}
        self.producer_options = producer_options or {}
        self.on_checkpoint = on_checkpoint
        self.reset = reset
        self.store = CheckpointStore(
            redis_client,
            config.name,
            require_secret(config),
            config.checkpoint.keep,
            config.checkpoint.insecure,
        )
        self.lease = Lease(redis_client, config.name, config.checkpoint.lease_ttl_ms, owner)
        self.stats = RunStats()
        self.merge = OrderedMerge(config.ordering.max_idle_ms)
        self.offsets: Offsets = {}
        self.checkpoint_version: int | None = None
        self.checkpointed_offsets: Offsets = {}
        self.labels_at_checkpoint = 0
        self.checkpoint_time = time.monotonic()
        self.lease_stop = threading.Event()
        self.lease_lost: LeaseLost | None = None
        self.redis_healthy = True
        self.retry_at = 0.0
        self.backoff = 0.1
        self.paused = False
        self.checkpoint_wanted = False
        self.lock = threading.RLock()  # the state, the merge and the offsets
        # Next offset to buffer per partition: a fetch that went stale across a rebalance
        # (revoked, re-assigned, seeked) must not buffer a record twice.
        self.expected: dict[tuple[str, int], int | None] = {}
        self.core: LearningCore = LearningCore.from_config(config)
        self.metrics = PipelineMetrics()
        self.metrics_port: int | None = None
        self.status_at = 0.0
        self.lags: dict[tuple[str, int], int | None] = {}
        self.prediction_partitions = 0  # known once the topics exist (run)
        self.validation = Validator(config.validation, regression=not self.core.classifier)
        self.label_type_logged = False

    # -- ownership ------------------------------------------------------------------------

    def _wait_for_lease(self) -> bool:
        """Standby until the lease is ours; False if asked to stop first."""
        announced = False
        while not self.stop.is_set():
            try:
                if self.lease.try_acquire():
                    log.info(
                        "pipeline %s: writer lease acquired (token %s)",
                        self.config.name,
                        self.lease.token,
                    )
                    return True
                if not announced:
                    log.info(
                        "pipeline %s: standby, lease held by %s",
                        self.config.name,
                        self.lease.holder(),
                    )
                    announced = True
            except redis.RedisError as e:
                log.warning("Redis unavailable while acquiring the lease: %s", e)
            time.sleep(min(1.0, self.config.checkpoint.lease_ttl_ms / 4000))
        return False

    def _keep_lease(self) -> None:
        """Renew from a thread of its own: poll() can block for seconds in a group join."""
        interval = self.config.checkpoint.lease_ttl_ms / 3000
        warned = False
        while not self.lease_stop.wait(interval):
            try:
                self.lease.renew()
                warned = False
            except LeaseLost as e:
                self.lease_lost = e
                return
            except redis.RedisError as e:
                # The checkpoint path notices the outage too; the lease is renewed once back.
                if not warned:
                    log.warning("cannot renew the lease: %s", e)
                    warned = True

    def _restore(self) -> None:
        while True:
            try:
                latest = self.store.latest_version()
                meta = self.store.meta(latest) if latest is not None else None
                if latest is not None and meta is not None and not self.reset:
                    self._refuse_other_model(latest, meta)  # before anything is unpickled
                checkpoint = None
                if latest is not None and not self.reset:
                    checkpoint = self.store.load(latest)
                break
            except redis.RedisError as e:
                log.warning("Redis unavailable while loading the checkpoint: %s; retrying", e)
                if self.stop.is_set():
                    raise
                time.sleep(1.0)
        if latest is not None and self.reset:
            self._reset_from(latest)
            return
        if checkpoint is None:
            log.info("pipeline %s: no checkpoint, starting untrained", self.config.name)
            return
        self.offsets = dict(checkpoint.offsets)
        self.checkpointed_offsets = dict(checkpoint.offsets)
        self.checkpoint_version = checkpoint.version
        self.core = LearningCore.from_config(self.config, checkpoint.state)
        self.labels_at_checkpoint = self.core.state.labels
        log.info(
            "pipeline %s: resuming from checkpoint %d (%d labels learned)",
            self.config.name,
            checkpoint.version,
            self.core.state.labels,
        )

    def _refuse_other_model(self, version: int, meta: dict[str, Any]) -> None:
        """A checkpoint holds one model and metric's state: another spec cannot resume it."""

        def same(a: str, b: str) -> bool:
            return "".join(a.split()) == "".join(b.split())

        asked = {
            "model.spec": self.config.model.spec,
            "evaluation.metric": self.config.evaluation.metric,
        }
        stored = {"model.spec": meta.get("model"), "evaluation.metric": meta.get("metric")}
        differ = [
            field
            for field in asked
            if stored[field] is not None and not same(str(stored[field]), str(asked[field]))
        ]
        if differ:
            asks = " and ".join(f"{field} {asked[field]!r}" for field in differ)
            has = " and ".join(f"{field} {stored[field]!r}" for field in differ)
            raise ConfigError(
                f"pipeline {self.config.name}: this run asks for {asks}, but its latest "
                f"checkpoint, version {version}, holds the state of {has}; start a new pipeline "
                "with --name NAME, or pass --reset to start this one untrained (its checkpoint "
                "versions stay for `riverline checkpoint rollback`)"
            )

    def _reset_from(self, previous: int) -> None:
        """``run --reset``: an untrained state becomes the latest; the previous one is pinned."""
        self.store.pin(previous)
        version = self.store.save(
            self.core.state, {}, self._checkpoint_meta("reset"), token=self.lease.token
        )
        self.checkpoint_version = version
        log.warning(
            "pipeline %s: --reset: starting untrained at checkpoint %d; the previous state is "
            "kept as version %d (`riverline checkpoint rollback %d` to go back)",
            self.config.name,
            version,
            previous,
            previous,
        )

    def _release_after_failed_start(self) -> None:
        """A start that stops before serving gives its lease back at once (not after its TTL)."""
        self.lease_stop.set()
        with contextlib.suppress(redis.RedisError):
            self.lease.release()

    # -- partition assignment -------------------------------------------------------------

    # kafka-python 3 calls these on its IO thread, possibly while the main thread drains
    # (confluent-kafka inside poll, on the main thread): they take the state lock, make no
    # blocking consumer call, and never write a checkpoint (with one writer per pipeline there
    # is nobody to hand state to; the next one is taken as usual).

    def on_assigned(self, assigned: list[Partition]) -> None:
        with self.lock:
            self._assign(assigned)

    def _assign(self, assigned: list[Partition]) -> None:
        self.merge.assign(assigned)
        for partition in assigned:
            offset = self.offsets.get(partition)
            self.expected[partition] = offset
            if offset is not None:
                self.kafka.seek(partition, offset)
            elif self.config.kafka.reset_policy == "earliest" or self.checkpoint_version is None:
                # Not the group's committed offset: Redis is the source of truth. A pipeline
                # with no checkpoint yet reads everything; the policy is for partitions that
                # appear once it has one (a topic that grew).
                self.kafka.seek_to_beginning(partition)
            else:
                self.kafka.seek_to_end(partition)
        if self.paused:
            self.kafka.pause(assigned)
        log.info("assigned %s", sorted(assigned))

    def on_revoked(self, revoked: list[Partition]) -> None:
        with self.lock:
            gone = list(revoked)
            self.merge.revoke(gone)
            for partition in gone:
                self.expected.pop(partition, None)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Consume until stopped (signal, ``until_idle``); returns the report.

        Raises :class:`LeaseLost` (or :class:`Fenced`) if another writer took the pipeline.
        """
        topics = self.topics
        self.transport = make_transport(self.config.kafka, self.bootstrap)
        self.transport.ensure_topics(
            [
                topics.events,
                topics.labels,
                topics.predictions,
                topics.dead_letters,
                topics.review_requests,
            ],
        )
        self.prediction_partitions = self.transport.partition_count(topics.predictions) or 0
        if self.config.telemetry.prometheus_port is not None:
            self.metrics_port = self.metrics.serve(self.config.telemetry.prometheus_port)
            log.info("metrics on http://0.0.0.0:%d/metrics", self.metrics_port)
        if not self._wait_for_lease():
            return self.report()
        keeper = threading.Thread(target=self._keep_lease, name="lease", daemon=True)
        keeper.start()
        try:
            self._restore()
            delivery_ms = self.producer_options.get("delivery_timeout_ms", DELIVERY_TIMEOUT_MS)
            self.outputs = DurableOutputs(
                lambda: self.transport.producer(**self.producer_options),
                flush_timeout_s=delivery_ms / 1000 + 5,
            )
            self.kafka = self.transport.consumer(self.config.name, **self.consumer_options)
        except BaseException:
            self._release_after_failed_start()
            raise
        self.kafka.subscribe([topics.events, topics.labels], self.on_assigned, self.on_revoked)
        self.kinds = {topics.events: KIND_EVENT, topics.labels: KIND_LABEL}
        fenced = False
        try:
            self._loop()
            self._final_checkpoint()
            self.publish_status()
        except (LeaseLost, Fenced) as e:
            fenced = True
            log.error("pipeline %s: stopping without writing: %s", self.config.name, e)
            raise
        finally:
            self.lease_stop.set()
            self.kafka.close()
            self.outputs.close()
            if not fenced:
                with contextlib.suppress(redis.RedisError):
                    self.lease.release()
        return self.report()

    def _loop(self) -> None:
        last_activity: float | None = None
        while not self.stop.is_set():
            fetched = self._fetch()
            processed = 0 if self.paused else self._drain()
            now = time.monotonic()
            if self.lease_lost is not None:
                raise self.lease_lost
            # Idle time counts from the first assignment: joining the group is not idleness.
            if (fetched or processed or last_activity is None) and self.kafka.assignment():
                last_activity = now
            if now - self.status_at >= self.config.telemetry.status_every_seconds:
                self.publish_status(now)
            if self._checkpoint_due(now):
                self.checkpoint("cadence")
            self._pause_if_unflushed()
            if (
                self.until_idle is not None
                and last_activity is not None
                and not fetched
                and not processed
                and self.redis_healthy
                and now - last_activity >= self.until_idle
            ):
                if self._broker_answers():
                    log.info("nothing new for %.1fs: stopping", self.until_idle)
                    return
                # Silence from an unreachable broker is not the end of the stream.
                last_activity = time.monotonic()

    def _broker_answers(self) -> bool:
        """Idle means caught up: a partition known to hold more is not the end of the stream
        (after an outage, fetching resumes only once the client rejoined the group)."""
        if any(self.lags.values()):
            return False
        return self.kafka.broker_answers(timeout_s=2.0)

    def _final_checkpoint(self, attempts: int = 30) -> None:
        for _ in range(attempts):
            if self.offsets == self.checkpointed_offsets:
                return
            if self.checkpoint(self.stop.reason or "idle"):
                return
            time.sleep(min(self.backoff, 1.0))
        log.error(
            "could not write the final checkpoint (Redis unreachable): the records after "
            "checkpoint %s will be processed again on the next start; nothing is lost",
            self.checkpoint_version,
        )

    def _fetch(self) -> int:
        batches = self.kafka.poll(timeout_ms=100)
        parsed = [
            (partition, [to_item(r, self.kinds[partition[0]], self.validation) for r in records])
            for partition, records in batches.items()
        ]
        # Outside the lock: position() may wait for the IO thread, which may wait for the lock.
        lags = {}
        for partition in self.kafka.assignment():
            # Fetch responses carry the high watermark; Tansu answers ListOffsets wrongly.
            lag = self.kafka.lag(partition)
            lags[partition] = lag
            if lag is not None:
                topic, number = partition
                self.metrics.lag.labels(topic=topic, partition=str(number)).set(lag)
        self.lags = lags
        count = 0
        with self.lock:
            for partition, items in parsed:
                if partition not in self.expected:
                    continue  # revoked since this fetch
                expected = self.expected[partition]
                fresh = [i for i in items if expected is None or i.offset >= expected]
                if fresh:
                    self.expected[partition] = fresh[-1].offset + 1
                    self.merge.push(partition, fresh)
                    count += len(fresh)
            for partition, lag in lags.items():
                if partition in self.expected:
                    self.merge.set_lag(partition, lag)
        if count:
            now = time.monotonic()
            if self.stats.first_record_at is None:
                self.stats.first_record_at = now
        self.stats.records += count
        return count

    def _drain(self) -> int:
        processed = 0
        while True:
            with self.lock:
                processed += self._drain_locked()
            self.metrics.flush()  # per batch, not per record
            if not self.checkpoint_wanted:
                return processed
            # Outside the lock: the group commit waits for the IO thread.
            self.checkpoint("labels")

    def _drain_locked(self) -> int:
        processed = 0
        while (item := self.merge.pop()) is not None:
            self._process(item.payload)
            # The offset moves before any checkpoint can see the record's effect on the state.
            self.offsets[item.partition] = item.offset + 1  # type: ignore[index]
            processed += 1
            self.stats.last_record_at = time.monotonic()
            if self.stop.is_set() or self.checkpoint_wanted:
                break
        return processed

    def _process(self, incoming: Incoming) -> None:
        started = time.perf_counter()
        parsed = incoming.parsed
        if isinstance(parsed, InvalidRecord):
            self.core.state.dead_letters[parsed.reason] += 1
            if parsed.reason == "label_wrong_type" and not self.label_type_logged:
                self.label_type_logged = True
                log.error(
                    "pipeline %s: %s; every such label is dead-lettered (label_wrong_type). "
                    "model.spec %r does not fit these labels",
                    self.config.name,
                    parsed,
                    self.config.model.spec,
                )
            self.dead_letter(incoming.origin, parsed.reason, str(parsed))
        elif isinstance(parsed, Event):
            self._on_event(incoming, parsed)
        else:
            learn_started = time.perf_counter()
            outcome = self.core.on_label(parsed, incoming.origin)
            self.metrics.learn_batch.observe(time.perf_counter() - learn_started)
            self._after(outcome)
        self.stats.processing_ms.update((time.perf_counter() - started) * 1000.0)

    def _on_event(self, incoming: Incoming, event: Event) -> None:
        predict_started = time.perf_counter()
        outcome = self.core.on_event(event, incoming.origin)
        self.metrics.predict_batch.observe(time.perf_counter() - predict_started)
        payload = outcome.prediction_json()
        if payload is not None:
            # Co-partitioned: the event's own partition number, when the topic has it.
            partition = incoming.partition
            self.outputs.send(
                self.topics.predictions,
                event.partition_key.encode(),
                payload,
                partition if partition < self.prediction_partitions else None,
            )
            self.stats.published += 1
            now_ms = time.time() * 1000.0
            if incoming.sent_ms is not None:
                wall_ms = max(0.0, now_ms - incoming.sent_ms)
                self.stats.latency_ms.update(wall_ms)
                self.metrics.latency_wall.observe(wall_ms / 1000.0)
            self.metrics.latency_event.observe(max(0.0, now_ms / 1000 - event.ts))
        self._after(outcome)

    def _after(self, outcome: Outcome) -> None:
        if outcome.review:
            self._publish_review(outcome)
        for rejection in outcome.rejections:
            self.dead_letter(rejection.origin, rejection.reason, rejection.message)
        for decision in outcome.decisions:
            self._log_decision(decision)
        if outcome.learned:
            unflushed = self.core.state.labels - self.labels_at_checkpoint
            if unflushed >= self.config.checkpoint.every_labels and self.redis_healthy:
                self.checkpoint_wanted = True

    def _publish_review(self, outcome: Outcome) -> None:
        """Review requests, and predictions the review loop serves (held, human, deadline).

        Keyed like their event, so with as many partitions as the events topic a request lands
        on the event's partition number.
        """
        for out in outcome.review:
            if isinstance(out.record, ReviewRequest):
                topic = self.topics.review_requests
            else:
                topic = self.topics.predictions
                self.stats.published += 1
            self.outputs.send(topic, out.key.encode(), encode(out.record))

    def _log_decision(self, decision: Decision) -> None:
        log.info(
            "%s at label %d: model %.4f vs fallback %.4f (%s)",
            decision.kind,
            decision.label_index,
            decision.model_metric,
            decision.fallback_metric,
            decision.reason,
        )

    def dead_letter(self, origin: Origin | None, reason: str, message: str) -> None:
        """Publish an unusable record, with its reason and original bytes (counted by the core)."""
        if origin is None:
            origin = Origin("", -1, -1, None, None, None)
        letter = DeadLetter.of(
            reason,
            message,
            topic=origin.topic,
            partition=origin.partition,
            offset=origin.offset,
            timestamp=origin.timestamp,
            key=origin.key,
            value=origin.value,
            rejected_at=time.time(),
            pipeline=self.config.name,
        )
        self.outputs.send(self.topics.dead_letters, origin.key, encode(letter))

    # -- checkpoints ------------------------------------------------------------------------

    def _checkpoint_due(self, now: float) -> bool:
        if self.offsets == self.checkpointed_offsets:
            return False
        if not self.redis_healthy:
            return now >= self.retry_at
        return now - self.checkpoint_time >= self.config.checkpoint.every_seconds

    def checkpoint(self, reason: str, commit_group: bool = True) -> int | None:
        """Write the state and offsets as one version; None if Redis is unreachable."""
        # Outputs first: once the offsets move past a record, its prediction must be durable.
        # A stopping consumer with an unreachable broker gives up instead: without this
        # checkpoint its records are read again on the next start, and their outputs re-sent.
        if not self.outputs.flush(attempts=3 if self.stop.is_set() else None):
            log.error("outputs not acknowledged by the broker: checkpoint skipped")
            return None
        state = self.core.state
        meta = self._checkpoint_meta(reason)
        started = time.perf_counter()
        try:
            with self.lock:
                written = dict(self.offsets)
                version = self.store.save(state, written, meta, token=self.lease.token)
        except redis.RedisError as e:
            self.checkpoint_wanted = False  # retried on the backoff schedule instead
            self._redis_down(e)
            return None
        self.stats.checkpoint_ms.update((time.perf_counter() - started) * 1000.0)
        if not self.redis_healthy:
            log.info("Redis is back: checkpoint %d written", version)
        self.redis_healthy, self.backoff = True, 0.1
        self.checkpoint_wanted = False
        self.checkpoint_version = version
        self.checkpointed_offsets = written
        self.labels_at_checkpoint = state.labels
        self.checkpoint_time = time.monotonic()
        self.stats.checkpoints += 1
        if self.paused:
            self.kafka.resume(self.kafka.assignment())
            self.paused = False
        if commit_group:
            self._commit_group_offsets()
        if self.on_checkpoint is not None:
            self.on_checkpoint(version, self.core)
        return version

    def _checkpoint_meta(self, reason: str) -> dict[str, Any]:
        state = self.core.state
        return {
            "reason": reason,
            "events": state.events,
            "labels": state.labels,
            "mode": state.gating.mode,
            "model": self.config.model.spec,
            "metric": self.config.evaluation.metric,
            "owner": self.lease.owner,
        }

    def _redis_down(self, error: Exception) -> None:
        if self.redis_healthy:
            log.warning("Redis unreachable (%s): serving on, checkpoints retried", error)
        self.redis_healthy = False
        self.retry_at = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, 5.0)

    def _pause_if_unflushed(self) -> None:
        """Past the bound, stop taking records rather than risk an unbounded replay."""
        unflushed = self.core.state.labels - self.labels_at_checkpoint
        limit = self.config.checkpoint.max_unflushed_labels
        if not self.redis_healthy and not self.paused and unflushed >= limit:
            log.warning("%d labels wait for a checkpoint: pausing consumption", unflushed)
            self.kafka.pause(self.kafka.assignment())
            self.paused = True

    def _commit_group_offsets(self) -> None:
        """For lag monitoring only: Redis stays the source of truth."""
        assigned = self.kafka.assignment()
        offsets = {p: o for p, o in self.offsets.items() if p in assigned}
        if offsets:
            try:
                self.kafka.commit(offsets)
            except Exception as e:  # a failed lag commit must not stop learning
                log.warning("could not commit group offsets: %s", e)

    def _active_seconds(self) -> float:
        """From the first record fetched to the last one processed."""
        first, last = self.stats.first_record_at, self.stats.last_record_at
        return last - first if first is not None and last is not None else 0.0

    def publish_status(self, now: float | None = None) -> None:
        """Refresh the gauges and the ``status`` hash that ``riverline status`` reads."""
        self.status_at = time.monotonic() if now is None else now
        state = self.core.state
        self.metrics.flush()
        self.metrics.sync_counters(
            {
                "events": state.events,
                "labels": state.labels,
                "served_by": state.served_by,
                "dead_letters": state.dead_letters,
                "expired_unlabelled": state.expired_unlabelled,
                "drift": len(state.drift_events),
            }
        )
        review = state.review.report() if state.review is not None else {}
        self.metrics.sync_review(review)
        for mode in ("cold", "shadow", "serving"):
            self.metrics.mode.labels(mode=mode).set(1 if state.gating.mode == mode else 0)
        self.metrics.model_version.set(self.core.model_version)
        self.metrics.labels_seen.set(state.labels)
        self.metrics.join_buffer.set(len(state.join))
        self.metrics.redis_healthy.set(1 if self.redis_healthy else 0)
        windowed = state.evaluator.windowed()
        for role in ("model", "fallback"):
            self.metrics.windowed.labels(role=role).set(float(windowed[role]))
        slices = state.evaluator.slice_values()
        by_slice = {
            value: {role: by_name[slices["metric"]] for role, by_name in roles.items()}
            for value, roles in slices.get("slices", {}).items()
        }
        for value, roles in by_slice.items():
            for role, metric in roles.items():
                self.metrics.slice_metric.labels(value=value, role=role).set(metric)
        for role, gap in slices.get("gap", {}).items():
            self.metrics.slice_gap.labels(role=role).set(gap)
        status = {
            "pipeline": self.config.name,
            "owner": self.lease.owner,
            "mode": state.gating.mode,
            "model": self.config.model.spec,
            "model_version": self.core.model_version,
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
            "lag": {f"{t}[{p}]": lag for (t, p), lag in sorted(self.lags.items())},
            "latency_ms": self.stats.latency_ms.summary(),
            "redis_healthy": self.redis_healthy,
            "checkpoint_version": self.checkpoint_version,
            "metrics_port": self.metrics_port,
            "review": review,
            "updated_at": time.time(),
        }
        # During an outage the checkpoint path reports it; the status just waits.
        with contextlib.suppress(redis.RedisError):
            self.store.client.set(
                self.store.key("status"), json.dumps(status, default=str), ex=86_400
            )

    def report(self) -> dict[str, Any]:
        report = self.core.report()
        report["checkpoint_version"] = self.checkpoint_version
        report["run"] = {
            "records": self.stats.records,
            "published_predictions": self.stats.published,
            "checkpoints": self.stats.checkpoints,
            "redis_healthy": self.redis_healthy,
            "seconds": round(time.monotonic() - self.stats.started, 3),
            "active_seconds": round(self._active_seconds(), 3),
            "latency_ms": {
                "event_to_prediction": self.stats.latency_ms.summary(),
                "processing": self.stats.processing_ms.summary(),
                "checkpoint": self.stats.checkpoint_ms.summary(),
            },
        }
        return report


def write_report(report: dict[str, Any], path: str | Path) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report, indent=2, sort_keys=False, default=str) + "\n")
