"""The loop of a process that owns a pipeline's learning state (``run`` and ``learner``).

Lifecycle: wait as a standby until this process holds the pipeline's lease; restore the latest
checkpoint; join the consumer group and seek every assigned partition to its checkpointed
offset; then fetch, process in order, and checkpoint. Redis, not the consumer group, decides
where reading resumes, so everything after the last checkpoint is read again in the same order
and the state after recovery equals that of a run that never stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from consumers import promotion
from consumers.checkpointer import Checkpointer, require_secret
from consumers.gc_policy import tune_for_streaming
from consumers.idleness import IdleStop
from consumers.inputs import Inputs
from consumers.outputs import Outputs
from consumers.ownership import Ownership
from consumers.processing import RecordProcessor, is_infrastructure, log_decision
from consumers.signals import StopFlag
from consumers.status import StatusBoard, active_seconds, lag_view
from pipeline.checkpointing.store import CheckpointStore, Fenced, Offsets
from pipeline.config import RiverlineConfig
from pipeline.core import LearningCore
from pipeline.kafka.records import KIND_EVENT, KIND_LABEL
from pipeline.kafka.transport import DELIVERY_TIMEOUT_MS, Partition, Transport, make_transport
from pipeline.ordering import OrderedMerge
from pipeline.state.lease import Lease, LeaseLost
from pipeline.telemetry import LatencyHistogram, PipelineMetrics
from pipeline.validation import Validator

log = logging.getLogger(__name__)


class Writer:
    """Lease, restore, inputs, processing, outputs, checkpoints and status, in one loop.

    Subclasses say what is read (:meth:`input_kinds`), whether predictions are published
    (``serves``), and what happens after each checkpoint (:meth:`after_checkpoint`).
    A Redis outage does not stop serving; losing the lease to another writer stops the loop at
    once, without writing.
    """

    serves = True
    role = "run"

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
            config.checkpoint.max_bytes,
        )
        self.lease = Lease(redis_client, config.name, config.checkpoint.lease_ttl_ms, owner)
        self.ownership = Ownership(self.lease, config.name, self.stop)
        self.checkpointer = Checkpointer(self.store, config)
        self.metrics = PipelineMetrics()
        self.status = StatusBoard(
            self.metrics,
            redis_client,
            self.store.key("status"),
            config.telemetry.status_every_seconds,
        )
        self.lock = threading.RLock()  # the state, the merge and the offsets
        self.offsets: Offsets = {}  # next offset per partition, of the records processed
        self.core: LearningCore = LearningCore.from_config(config)
        self.validation = Validator(config.validation, regression=not self.core.classifier)
        self.inputs: Inputs | None = None
        self.outputs: Outputs | None = None
        self.processor: RecordProcessor | None = None
        # Set while processing a record to stop the drain after it (see between_records):
        # a drain otherwise runs through everything fetched, thousands of records in a replay.
        self.stop_drain = False
        self.started = time.monotonic()
        self.metrics.readiness = self.ready
        self._promotion_due = 0.0  # when to look for a promotion asked for by hand next

    def ready(self) -> tuple[bool, str]:
        """For /readyz: a writer serving its partitions, or a standby waiting for the lease."""
        if self.ownership.held:
            assigned = len(self.inputs.assignment()) if self.inputs is not None else 0
            if assigned:
                return True, f"{self.role}: writer, {assigned} partitions assigned"
            return False, f"{self.role}: writer, joining the consumer group"
        if self.ownership.waiting:
            return True, f"{self.role}: standby, waiting for the writer lease"
        return False, f"{self.role}: not started"

    # -- what subclasses choose -------------------------------------------------------------

    def input_kinds(self) -> dict[str, str]:
        return {self.topics.events: KIND_EVENT, self.topics.labels: KIND_LABEL}

    def output_topics(self) -> list[str]:
        t = self.topics
        return [t.predictions, t.dead_letters, t.review_requests]

    def never_wait(self, partition: object) -> bool:
        """Partitions the ordered merge never waits for (none: events and labels are ordered)."""
        return False

    def after_checkpoint(self, version: int) -> None:
        """Called with each version written (the learner publishes a model version here)."""

    def on_started(self) -> None:
        """Called once the state is restored, before the first fetch."""

    def loop_tick(self, now: float) -> None:
        """Called once per loop turn, outside the lock."""

    def between_records(self) -> None:
        """Called, outside the lock, after the record that set :attr:`stop_drain` (the
        learner publishes the version a promotion or demotion made, at that very label)."""

    # -- compatibility views ----------------------------------------------------------------

    @property
    def metrics_port(self) -> int | None:
        return self.status.port

    @property
    def redis_healthy(self) -> bool:
        return self.checkpointer.healthy

    @property
    def checkpoint_version(self) -> int | None:
        return self.checkpointer.version

    @property
    def lags(self) -> dict[Partition, int | None]:
        return self.inputs.lags if self.inputs is not None else {}

    # -- start --------------------------------------------------------------------------------

    def _start(self, transport: Transport) -> None:
        """Restore the state and open the clients (the lease is held)."""
        restored = self.checkpointer.restore(self.stop.is_set, self.reset)
        if restored.reset_from is not None:
            self.checkpointer.reset(
                restored.reset_from,
                self.core.state,
                self.checkpoint_meta("reset"),
                self.ownership.token,
            )
        elif restored.checkpoint is None:
            log.info("pipeline %s: no checkpoint, starting untrained", self.config.name)
        else:
            checkpoint = restored.checkpoint
            self.offsets = dict(checkpoint.offsets)
            self.core = LearningCore.from_config(self.config, checkpoint.state)
            self.checkpointer.labels_at_checkpoint = self.core.state.labels
            log.info(
                "pipeline %s: resuming from checkpoint %d (%d labels learned)",
                self.config.name,
                checkpoint.version,
                self.core.state.labels,
            )
        delivery_ms = self.producer_options.get("delivery_timeout_ms", DELIVERY_TIMEOUT_MS)
        self.outputs = Outputs(
            lambda: transport.producer(**self.producer_options),
            self.topics,
            self.config.name,
            transport.partition_count(self.topics.predictions) or 0,
            flush_timeout_s=delivery_ms / 1000 + 5,
            max_message_bytes=self.config.kafka.max_message_bytes,
        )
        self.processor = RecordProcessor(
            self.core,
            self.outputs,
            self.metrics,
            self.config,
            self.checkpointer.note_learned,
            serve=self.serves,
        )
        consumer = transport.consumer(self.config.name, **self.consumer_options)
        self.inputs = Inputs(
            consumer,
            self.input_kinds(),
            self.validation,
            OrderedMerge(self.config.ordering.max_idle_ms, never_wait=self.never_wait),
            self.lock,
            self.metrics,
            lambda partition: self.checkpointer.start_of(partition, self.offsets),
        )
        if self.processor.immediate:
            self.inputs.on_fresh_events = self.processor.serve_fetched

    def run(self) -> dict[str, Any]:
        """Consume until stopped (signal, ``until_idle``); returns the report.

        Raises :class:`LeaseLost` (or :class:`Fenced`) if another writer took the pipeline.
        """
        transport = make_transport(self.config.kafka, self.bootstrap)
        transport.ensure_topics(list(self.input_kinds()) + self.output_topics())
        self.status.serve(self.config.telemetry.prometheus_port)
        if not self.ownership.wait():
            return self.report()
        self.ownership.keep()
        try:
            self._start(transport)
            self.on_started()
        except BaseException:
            self.ownership.release()  # a refused start gives the lease back at once
            raise
        assert self.inputs is not None and self.outputs is not None
        self.inputs.subscribe()
        tune_for_streaming()
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
            self.checkpointer.abandon()  # only a failed or fenced run still has one in flight
            # A fenced writer's successor is joining the group now: leaving mid-rebalance can
            # leave the group stuck, an expiring session cannot.
            self.inputs.close(leave_group=not fenced)
            self.outputs.close()
            if fenced:
                self.ownership.abandon()
            else:
                self.ownership.release()
        return self.report()

    # -- the loop -----------------------------------------------------------------------------

    def _loop(self) -> None:
        inputs = self.inputs
        assert inputs is not None
        idle = IdleStop(self.until_idle, inputs)
        while not self.stop.is_set():
            fetched = inputs.fetch()
            processed = 0 if inputs.paused else self._drain()
            now = time.monotonic()
            self.ownership.check()
            inputs.check_joined(now, self.config.kafka.join_timeout_seconds, self.config.name)
            if self.status.due(now):
                self.publish_status(now)
            self._collect_checkpoint()
            if self.checkpointer.due(now, self.offsets):
                self.checkpoint("cadence")
            if now >= self._promotion_due:
                self._promotion_due = now + self.config.telemetry.status_every_seconds
                self._promote_by_hand()
            self.loop_tick(now)
            if self.checkpointer.too_far(self.core.state.labels) and not inputs.paused:
                unflushed = self.core.state.labels - self.checkpointer.labels_at_checkpoint
                log.warning("%d labels wait for a checkpoint: pausing consumption", unflushed)
                inputs.pause()
            if idle.after_turn(now, fetched, processed, may_stop=self.checkpointer.healthy):
                return

    def _drain(self) -> int:
        processor = self.processor
        assert processor is not None
        processed = 0
        while True:
            with self.lock:
                processed += self._drain_locked()
            self.metrics.flush()  # per batch, not per record
            processor.tidy()
            if self.stop_drain:
                self.stop_drain = False
                self.between_records()
                if not self.checkpointer.wanted and not self.stop.is_set():
                    continue  # the rest of what was fetched
            if not self.checkpointer.wanted:
                return processed
            # Outside the lock: the group commit waits for the IO thread.
            self.checkpoint("labels")

    def _drain_locked(self) -> int:
        inputs, processor, offsets = self.inputs, self.processor, self.offsets
        assert inputs is not None and processor is not None
        process, pop, stopped, checkpointer = (
            processor.process,
            inputs.merge.pop,  # Inputs.pop's own, without its call
            self.stop.is_set,
            self.checkpointer,
        )
        processed = 0
        while (item := pop()) is not None:
            try:  # free in CPython 3.11+ until something raises
                process(item.payload)
            except Exception as e:
                # No single record may stop the pipeline; only its infrastructure may.
                if is_infrastructure(e):
                    raise
                processor.failed(item.payload, e)
            # The offset moves before any checkpoint can see the record's effect on the state.
            offsets[item.partition] = item.offset + 1  # type: ignore[index]
            processed += 1
            if stopped() or checkpointer.wanted or self.stop_drain:
                break
        if processed:
            processor.last_record_at = time.monotonic()
        return processed

    def _promote_by_hand(self) -> None:
        """Apply a ``riverline promote`` request between two checkpoints (consumers/promotion):
        the promotion is then at a checkpoint's state, whatever crash comes."""
        try:
            asked = promotion.pending(self.store)
        except redis.RedisError:
            return  # asked again on the next turn
        if asked is None:
            return
        board = self.core.state.challengers
        if board is not None and asked["id"] in board.applied:
            promotion.answer(self.store, asked["id"], True, "applied before a restart")
            return
        problem = (
            board.unknown(asked["challenger"])
            if board is not None
            else f"no challenger {asked['challenger']!r} (none is configured)"
        )
        if problem is not None:
            promotion.answer(self.store, asked["id"], False, problem)
            return
        if self.checkpoint("promotion", background=False) is None:
            return  # Redis or the broker is away: tried again later
        with self.lock:
            try:
                decision = self.core.promote_challenger(asked["challenger"])
            except KeyError as e:
                promotion.answer(self.store, asked["id"], False, str(e.args[0]))
                return
            assert self.core.state.challengers is not None
            self.core.state.challengers.applied.append(asked["id"])
        if self.checkpoint("promotion", background=False) is None:
            return  # not durable yet: a restart promotes again from the first checkpoint
        log_decision(decision)
        if self.processor is not None and self.processor.on_decision is not None:
            self.processor.on_decision(decision)  # a learner publishes the new champion
        promotion.answer(self.store, asked["id"], True, decision.reason)

    # -- checkpoints --------------------------------------------------------------------------

    def checkpoint(
        self, reason: str, commit_group: bool = True, background: bool | None = None
    ) -> int | None:
        """Write the state and offsets as one version; None if not written.

        In the background (``checkpoint.background`` unless told otherwise) this starts the
        write and returns None: the loop finishes it (:meth:`_collect_checkpoint`).
        """
        assert self.outputs is not None and self.inputs is not None
        if background is None:
            background = self.checkpointer.background
        # One write at a time: a checkpoint asked for while one is in flight waits for it.
        in_flight = self.checkpointer.in_flight is not None
        collected = self._collect_checkpoint(block=True)
        if in_flight and background:
            if collected is None:
                return None  # it failed: retried on the backoff schedule
            if self.offsets == self.checkpointer.offsets:
                return collected
        # Asynchronous where the client tells acknowledgements without waiting (confluent),
        # as a Flink barrier: the child snapshots the state and offsets of this instant and
        # packs them while the loop serves on, and writes once the outputs sent before this
        # instant are acknowledged (_release_held). Otherwise outputs first: once the offsets
        # move past a record, its outputs must be durable. A stopping writer with an
        # unreachable broker gives up instead: without this checkpoint its records are read
        # again on the next start, and their outputs re-sent.
        held = background and self.outputs.marks_without_waiting
        if not held and not self.outputs.flush(attempts=3 if self.stop.is_set() else None):
            log.error("outputs not acknowledged by the broker: checkpoint skipped")
            return None
        if background:
            self.checkpointer.start(
                self.core.state,
                self.offsets,
                self.checkpoint_meta(reason),
                self.ownership.token,
                self.lock,
                barrier=self.outputs.barrier if held else None,
            )
            return None
        version = self.checkpointer.write(
            self.core.state,
            self.offsets,
            self.checkpoint_meta(reason),
            self.ownership.token,
            self.lock,
        )
        if version is None:
            return None
        self._checkpointed(version, commit_group)
        return version

    def _collect_checkpoint(self, block: bool = False) -> int | None:
        """Finish a background write once its child is done (``block``: wait for it)."""
        if self.checkpointer.holding and not self._release_held(block):
            return None
        version = self.checkpointer.collect(block)
        if version is not None:
            self._checkpointed(version, True)
        return version

    def _release_held(self, block: bool) -> bool:
        """Let the held write land once the broker acknowledged every output sent before its
        snapshot; True once it is told. Its offsets move past those records, so it never lands
        before them: when some failed, the broker is slow past the delivery timeout, or the
        caller must wait (``block``), the outputs are flushed (sent again) first, and if even
        that fails the write is dropped."""
        assert self.outputs is not None
        checkpointer = self.checkpointer
        acknowledged = self.outputs.barrier_acknowledged(checkpointer.barrier)
        if acknowledged is None and not block:
            held_for = time.monotonic() - checkpointer.held_since
            if held_for < self.outputs.durable.flush_timeout_s:
                return False
        if not acknowledged and not self.outputs.flush(attempts=3 if self.stop.is_set() else None):
            log.error("outputs not acknowledged by the broker: checkpoint skipped")
            checkpointer.drop_held()
            return False
        checkpointer.go()
        return True

    def _checkpointed(self, version: int, commit_group: bool) -> None:
        """What follows a version written, in the loop's thread: resume, commit, hooks."""
        assert self.inputs is not None
        self.inputs.resume()
        if commit_group:
            # For lag monitoring only: Redis stays the source of truth.
            try:
                self.inputs.commit(self.checkpointer.offsets)
            except Exception as e:  # a failed lag commit must not stop learning
                log.warning("could not commit group offsets: %s", e)
        self.after_checkpoint(version)
        if self.on_checkpoint is not None:
            # The core as it is now: after a background write, it has moved on since the fork.
            self.on_checkpoint(version, self.core)

    def checkpoint_meta(self, reason: str) -> dict[str, Any]:
        state = self.core.state
        return {
            "reason": reason,
            "role": self.role,
            "events": state.events,
            "labels": state.labels,
            # riverline explain finds the model of a prediction's version here (JSON only).
            "model_version": self.core.model_version,
            "mode": state.gating.mode,
            "model": self.config.model.spec,
            "metric": self.config.evaluation.metric,
            "owner": self.lease.owner,
        }

    def _final_checkpoint(self, attempts: int = 30) -> None:
        self._collect_checkpoint(block=True)
        for _ in range(attempts):
            if self.offsets == self.checkpointer.offsets:
                return
            # Synchronous: the process ends after it, and must know it landed.
            if self.checkpoint(self.stop.reason or "idle", background=False):
                return
            time.sleep(min(self.checkpointer.backoff, 1.0))
        log.error(
            "could not write the final checkpoint (Redis unreachable): the records after "
            "checkpoint %s will be processed again on the next start; nothing is lost",
            self.checkpointer.version,
        )

    # -- status and report ------------------------------------------------------------------

    def publish_status(self, now: float | None = None) -> None:
        """Refresh the gauges and the ``status`` hash that ``riverline status`` reads."""
        status: dict[str, Any] = {"pipeline": self.config.name, "role": self.role}
        status["owner"] = self.lease.owner
        board = self.core.state.challengers
        # After a challenger's takeover the champion is no longer model.spec.
        status["model"] = board.champion.spec if board is not None else self.config.model.spec
        status.update(self.status.learning_gauges(self.core, self.checkpointer.healthy))
        status["lag"] = lag_view(self.lags)
        latency = self.processor.latency_ms if self.processor else LatencyHistogram()
        status["latency_ms"] = latency.summary()
        status["checkpoint_version"] = self.checkpointer.version
        self.status.publish(status, now)

    def report(self) -> dict[str, Any]:
        report = self.core.report()
        report["checkpoint_version"] = self.checkpointer.version
        processor, inputs = self.processor, self.inputs
        empty = LatencyHistogram()
        report["run"] = {
            "pipeline": self.config.name,  # here, not above: reports of two runs compare equal
            "role": self.role,
            "records": inputs.records if inputs else 0,
            "published_predictions": self.outputs.published if self.outputs else 0,
            "checkpoints": self.checkpointer.count,
            "checkpoint_failures": self.checkpointer.failures,
            "redis_healthy": self.checkpointer.healthy,
            "seconds": round(time.monotonic() - self.started, 3),
            "active_seconds": round(
                active_seconds(
                    inputs.first_record_at if inputs else None,
                    processor.last_record_at if processor else None,
                ),
                3,
            ),
            "latency_ms": {
                "event_to_prediction": (processor.latency_ms if processor else empty).summary(),
                "processing": (processor.processing_ms if processor else empty).summary(),
                "checkpoint": self.checkpointer.milliseconds.summary(),
                # What the event path paid for each background write (the fork).
                "checkpoint_fork": self.checkpointer.forks.summary(),
                # How long a held write waited for the outputs before it (not the event path).
                "checkpoint_hold": self.checkpointer.holds.summary(),
            },
        }
        return report
