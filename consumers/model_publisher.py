"""A learner's model versions in Redis: when to publish one, and publishing it.

A version is a serving snapshot (the model, the gating state, the fallback's digest), published
every ``serving.every_labels`` labels or ``serving.every_seconds``, and at once on a promotion or
demotion (:class:`~pipeline.serving.cadence.PublishCadence`), so predictors switch from the
fallback to the model (and back) without delay.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from pipeline.checkpointing.model_versions import ModelVersionStore
from pipeline.checkpointing.store import Offsets
from pipeline.config import RiverlineConfig
from pipeline.core import LearningCore
from pipeline.serving.cadence import PublishCadence
from pipeline.serving.snapshot import snapshot_of

log = logging.getLogger(__name__)


class ModelPublisher:
    """Publishes the learner's serving snapshots as signed, fenced model versions."""

    def __init__(self, client: redis.Redis, config: RiverlineConfig) -> None:
        self.config = config
        self.store = ModelVersionStore.for_config(client, config)
        self.cadence = PublishCadence(config.serving, now=time.monotonic(), last_version=-1)
        self.last_version: int | None = None
        self.published = 0
        self.decided = False  # a promotion or demotion since the last version

    def due(self, version: int, now: float) -> bool:
        return self.cadence.due(version, now, self.decided)

    def publish(
        self,
        core: LearningCore,
        offsets: Offsets,
        lock: threading.RLock,
        token: int | None,
        reason: str,
    ) -> int | None:
        """Snapshot under the lock (between records); sign and write outside it.

        Raises :class:`~pipeline.checkpointing.trust.Fenced` if another learner took the lease.
        """
        with lock:
            snapshot = snapshot_of(core, self.config, offsets)
        now = time.monotonic()
        try:
            version = self.store.publish(snapshot, token=token)
        except redis.RedisError as e:
            # Predictors keep serving what they have; the cadence tries again.
            log.warning("could not publish model version %d: %s", snapshot.version, e)
            self.cadence.last_at = now
            return None
        self.cadence.published(version, now)
        self.decided = False
        self.published += 1
        self.last_version = version
        log.info("model version %d published (%s, mode %s)", version, reason, snapshot.mode)
        return version
