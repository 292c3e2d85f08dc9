"""The writer's learning state in Redis: restored at start, written on a cadence, retried
through outages.

A checkpoint is the core state and the next offset of every partition it covers, written as one
signed version (:class:`~pipeline.checkpointing.store.CheckpointStore`), so a restarted writer
seeks to those offsets and reaches the state of a run that never stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from consumers.inputs import Start
from pipeline.checkpointing import background
from pipeline.checkpointing.background import BackgroundSave
from pipeline.checkpointing.store import (
    Checkpoint,
    CheckpointStore,
    CheckpointTooLarge,
    Fenced,
    Offsets,
)
from pipeline.config import ConfigError, RiverlineConfig
from pipeline.provenance import provenance
from pipeline.telemetry import LatencyHistogram

log = logging.getLogger(__name__)


@dataclass
class Restored:
    """What a writer starts from: a checkpoint's state and offsets, or nothing (untrained)."""

    checkpoint: Checkpoint | None
    reset_from: int | None = None  # ``--reset``: the version set aside


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


class Checkpointer:
    """When and what to checkpoint, and whether Redis answers.

    A Redis outage does not stop serving: writes are retried with backoff, and the role pauses
    consumption once ``max_unflushed_labels`` labels wait for a checkpoint (:meth:`too_far`).

    With ``checkpoint.background`` a write is a forked child (:meth:`start`) whose outcome
    :meth:`collect` takes in; one at a time. Given a barrier on the outputs, the child is forked
    at once and *held* (:attr:`holding`): it packs the state, and writes it only once the
    writer, having seen the barrier acknowledged, says :meth:`go`.
    """

    def __init__(self, store: CheckpointStore, config: RiverlineConfig) -> None:
        self.store = store
        self.config = config
        self.version: int | None = None
        self.offsets: Offsets = {}  # the offsets of the last version written
        self.labels_at_checkpoint = 0
        self.written_at = time.monotonic()
        self.healthy = True
        self.retry_at = 0.0
        self.backoff = 0.1
        self.wanted = False  # a label count asked for one as soon as the batch ends
        self.count = 0
        self.milliseconds = LatencyHistogram()
        self.background = config.checkpoint.background and background.supported()
        self.in_flight: BackgroundSave | None = None
        self._pending: tuple[Offsets, int] = ({}, 0)  # the in-flight write's offsets, labels
        self.forks = LatencyHistogram()  # what a background write costs the event path
        self.failures = 0  # background writes that did not land
        self.barrier: Any = None  # a held write's: the outputs' mark at its snapshot
        self.held_since = 0.0
        self.holds = LatencyHistogram()  # how long held writes waited for the outputs

    # -- restore ----------------------------------------------------------------------------

    def restore(self, stop_is_set: Any, reset: bool) -> Restored:
        """The latest checkpoint, verified; retried while Redis is down (unless stopping)."""
        while True:
            try:
                latest = self.store.latest_version()
                meta = self.store.meta(latest) if latest is not None else None
                if latest is not None and meta is not None and not reset:
                    self._refuse_other_model(latest, meta)  # before anything is unpickled
                checkpoint = None
                if latest is not None and not reset:
                    checkpoint = self.store.load(latest)
                break
            except redis.RedisError as e:
                log.warning("Redis unavailable while loading the checkpoint: %s; retrying", e)
                if stop_is_set():
                    raise
                time.sleep(1.0)
        if latest is not None and reset:
            return Restored(None, reset_from=latest)
        if checkpoint is not None:
            self.offsets = dict(checkpoint.offsets)
            self.version = checkpoint.version
        return Restored(checkpoint)

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

    def reset(self, previous: int, state: Any, meta: dict[str, Any], token: int | None) -> None:
        """``--reset``: an untrained state becomes the latest; the previous one is pinned."""
        self.store.pin(previous)
        self.version = self.store.save(state, {}, meta, token=token)
        log.warning(
            "pipeline %s: --reset: starting untrained at checkpoint %d; the previous state is "
            "kept as version %d (`riverline checkpoint rollback %d` to go back)",
            self.config.name,
            self.version,
            previous,
            previous,
        )

    def start_of(self, partition: tuple[str, int], offsets: Offsets) -> Start:
        """Where a writer reads an assigned partition from: Redis, not the group, decides."""
        offset = offsets.get(partition)
        if offset is not None:
            return offset
        # A pipeline with no checkpoint yet reads everything; the reset policy is for
        # partitions that appear once it has one (a topic that grew).
        if self.config.kafka.reset_policy == "earliest" or self.version is None:
            return "beginning"
        return "end"

    # -- cadence ----------------------------------------------------------------------------

    def note_learned(self, labels: int) -> None:
        """After a label: ask for a checkpoint once ``every_labels`` wait for one."""
        every = self.config.checkpoint.every_labels
        # Counted from the write in flight: checkpoints fall on the same label counts either way.
        since = self._pending[1] if self.in_flight is not None else self.labels_at_checkpoint
        if self.healthy and labels - since >= every:
            self.wanted = True

    def due(self, now: float, offsets: Offsets) -> bool:
        if self.in_flight is not None or offsets == self.offsets:
            return False
        if not self.healthy:
            return now >= self.retry_at
        return now - self.written_at >= self.config.checkpoint.every_seconds

    def too_far(self, labels: int) -> bool:
        """Redis is down and too many labels wait: stop taking records (a bounded replay)."""
        unflushed = labels - self.labels_at_checkpoint
        return not self.healthy and unflushed >= self.config.checkpoint.max_unflushed_labels

    # -- writing ----------------------------------------------------------------------------

    def write(
        self,
        state: Any,
        offsets: Offsets,
        meta: dict[str, Any],
        token: int | None,
        lock: threading.RLock,
    ) -> int | None:
        """Write the state and a copy of the offsets as one version; None if Redis is down.

        The copy and the pickle happen under ``lock``: no record moves the state or the offsets
        in between.
        """
        started = time.perf_counter()
        try:
            with lock:
                written = dict(offsets)
                labels = state.labels
                # What made this state: code, config and the data consumed (issue 11).
                meta = {**meta, **provenance(self.config, written)}
                version = self.store.save(state, written, meta, token=token)
        except redis.RedisError as e:
            self.wanted = False  # retried on the backoff schedule instead
            self._down(e)
            return None
        self.milliseconds.update((time.perf_counter() - started) * 1000.0)
        self.wanted = False
        self._written(version, written, labels)
        return version

    def start(
        self,
        state: Any,
        offsets: Offsets,
        meta: dict[str, Any],
        token: int | None,
        lock: threading.RLock,
        barrier: Callable[[], Any] | None = None,
    ) -> None:
        """Fork a child that writes the state and a copy of the offsets (see
        :mod:`pipeline.checkpointing.background`); :meth:`collect` takes its outcome in.

        The fork happens under ``lock``: the child's copy is the state and offsets of one
        instant, as the synchronous write's pickle is. With ``barrier`` (the outputs' mark,
        taken at that instant too) the child is held until :meth:`go`.
        """
        assert self.in_flight is None, "one background write at a time"
        started = time.perf_counter()
        with lock:
            written = dict(offsets)
            labels = state.labels
            meta = {**meta, **provenance(self.config, written)}
            self.barrier = barrier() if barrier is not None else None
            self.in_flight = BackgroundSave.start(
                self.store, state, written, meta, token, held=barrier is not None
            )
        self.held_since = time.monotonic()
        self.forks.update((time.perf_counter() - started) * 1000.0)
        self._pending = (written, labels)
        self.wanted = False

    @property
    def holding(self) -> bool:
        """A held write waits for :meth:`go`."""
        return self.in_flight is not None and self.in_flight.held

    def go(self) -> None:
        """Let the held write land: the outputs before its snapshot are acknowledged."""
        assert self.in_flight is not None
        self.holds.update((time.monotonic() - self.held_since) * 1000.0)
        self.in_flight.go()
        self.barrier = None

    def drop_held(self) -> None:
        """The outputs before the held write's snapshot could not be delivered: it must not
        land (its offsets would skip them). Taken again at the next turn's cadence."""
        self.abandon()
        self.barrier = None
        self.wanted = False

    def collect(self, block: bool = False) -> int | None:
        """The version the write in flight wrote, once its child is done; None while it runs,
        when none is in flight, or when it failed (then retried on the backoff schedule, as a
        Redis error is). Raises :class:`Fenced` if a newer writer holds the lease, and
        :class:`CheckpointTooLarge` over ``checkpoint.max_bytes`` (the synchronous write
        raises it from the store)."""
        if self.in_flight is None:
            return None
        if block and self.in_flight.held:
            # The child waits for go, and would wait for ever with its parent waiting on it.
            raise RuntimeError("a held checkpoint write is collected only after go()")
        outcome = self.in_flight.poll(block)
        if outcome is None:
            return None
        self.in_flight = None
        if outcome.fenced:
            raise Fenced(outcome.error or "checkpoint refused")
        if outcome.too_large:
            raise CheckpointTooLarge(outcome.error or "checkpoint too large")
        if outcome.version is None:
            self.failures += 1
            self.wanted = False
            self._down(RuntimeError(outcome.error or "background checkpoint failed"))
            return None
        self.milliseconds.update(outcome.milliseconds)
        written, labels = self._pending
        self._written(outcome.version, written, labels)
        return outcome.version

    def abandon(self) -> None:
        """A fenced or failing writer stops: its write in flight is killed, not waited for."""
        if self.in_flight is not None:
            self.in_flight.kill()
            self.in_flight = None

    def _written(self, version: int, written: Offsets, labels: int) -> None:
        if not self.healthy:
            log.info("Redis is back: checkpoint %d written", version)
        # `wanted` stays: a label count reached while a write was in flight still asks.
        self.healthy, self.backoff = True, 0.1
        self.version = version
        self.offsets = written
        self.labels_at_checkpoint = labels
        self.written_at = time.monotonic()
        self.count += 1

    def _down(self, error: Exception) -> None:
        if self.healthy:
            log.warning("Redis unreachable (%s): serving on, checkpoints retried", error)
        self.healthy = False
        self.retry_at = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, 5.0)
