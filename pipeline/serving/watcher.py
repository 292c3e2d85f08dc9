"""A predictor's eye on the model versions: new ones are loaded off the event path.

A daemon thread subscribes to the pipeline's announcement channel and also reads
``model:latest`` every ``poll_seconds``, since pub/sub drops what is published while a subscriber
is disconnected. A version newer than the newest loaded is loaded (its signature checked before
anything is unpickled) and handed over by :meth:`ModelWatcher.take`, which the event loop calls
between records: a swap never happens mid-record, and never goes back to an older version.

While Redis is down the watcher keeps what it has, says so once, and retries with backoff.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import redis

from pipeline.checkpointing.model_versions import ModelVersionStore
from pipeline.checkpointing.trust import CheckpointError
from pipeline.serving.snapshot import ServingSnapshot

log = logging.getLogger(__name__)

MAX_BACKOFF = 5.0
# Longest the thread blocks at once: bounds how long stop() waits.
TICK = 0.25


@dataclass
class VersionTimes:
    """When a version was made and reached this process (wall clock, seconds since the epoch).

    ``taken_at - created_at`` is the time from the learner's snapshot to the predictor serving
    with it (on one machine, or with synchronised clocks); the first prediction follows at once.
    """

    version: int
    heard_at: float  # the announcement arrived, or a poll found it
    via: Literal["pubsub", "poll"]
    created_at: float | None = None  # the learner took the snapshot (from the version's meta)
    loaded_at: float | None = None  # verified and unpickled here
    taken_at: float | None = None  # handed to the event loop


class ModelWatcher:
    """Loads each new model version in the background; :meth:`take` hands it over.

    ``accept`` (e.g. :meth:`ServingCore.check <pipeline.serving.predictor_core.ServingCore.check>`)
    may refuse a loaded version with ValueError: it is logged and skipped, the current one
    stays. ``subscribe=False`` turns pub/sub off, leaving the polling (for tests).
    """

    def __init__(
        self,
        store: ModelVersionStore,
        poll_seconds: float = 2.0,
        *,
        accept: Callable[[ServingSnapshot], None] | None = None,
        subscribe: bool = True,
        logger: logging.Logger | None = None,
    ) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self.accept = accept
        self.subscribe = subscribe
        self.log = logger or log
        self.times: dict[int, VersionTimes] = {}
        self.healthy = True
        self.subscribed = threading.Event()  # the channel subscription is confirmed
        self.refused: set[int] = set()  # versions that failed verification or ``accept``
        self._newest: ServingSnapshot | None = None
        self._taken = -1
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"model-watcher-{store.pipeline}", daemon=True
        )

    # -- the event loop's side --------------------------------------------------------------

    def start(self) -> ModelWatcher:
        self._thread.start()
        return self

    def __enter__(self) -> ModelWatcher:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()

    @property
    def newest_version(self) -> int | None:
        """The newest version loaded (taken or not)."""
        newest = self._newest
        return None if newest is None else newest.version

    def take(self) -> ServingSnapshot | None:
        """The newest loaded version if it was not taken yet, else None (cheap: call per record)."""
        newest = self._newest
        if newest is None or newest.version <= self._taken:
            return None
        with self._changed:
            newest = self._newest
            assert newest is not None  # never unset once set
            if newest.version <= self._taken:
                return None
            self._taken = newest.version
            self.times[newest.version].taken_at = time.time()
            return newest

    def refresh(self) -> None:
        """Check ``model:latest`` now, in the caller's thread.

        A predictor given partitions calls it before serving them: their previous owner served
        at most the version that was latest then, so a version per partition never goes back.
        """
        try:
            self._poll()
        except (redis.RedisError, OSError) as e:
            self._down(e)

    def wait_for(self, version: int, timeout: float) -> bool:
        """Whether a version at least this new was loaded within ``timeout`` seconds."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._newest is not None and self._newest.version >= version, timeout
            )

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        pubsub: Any = None
        next_poll = 0.0
        backoff = 0.1
        while not self._stop.is_set():
            try:
                if self.subscribe and pubsub is None:
                    pubsub = self.store.client.pubsub()
                    pubsub.subscribe(self.store.channel)
                    next_poll = 0.0  # what was published while away is found by a poll
                if time.monotonic() >= next_poll:
                    self._poll()
                    next_poll = time.monotonic() + self.poll_seconds
                wait = min(TICK, max(0.0, next_poll - time.monotonic()))
                if pubsub is None:
                    self._stop.wait(wait)
                else:
                    self._on_message(pubsub.get_message(timeout=wait))
                self._up()
                backoff = 0.1
            except (redis.RedisError, OSError) as e:
                self._down(e)
                self._close(pubsub)
                pubsub = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            except Exception:
                # Never die silently: a predictor without its watcher would serve one version on.
                self.log.exception("model watcher of %s: unexpected error", self.store.prefix)
                self._close(pubsub)
                pubsub = None
                self._stop.wait(MAX_BACKOFF)
        self._close(pubsub)

    def _poll(self) -> None:
        """Load ``model:latest`` if newer; if it is refused, the newest kept one that is not.

        So a predictor that starts while the latest version is bad (tampered with, say) still
        serves the best version it can verify, rather than the fallback.
        """
        latest = self.store.latest_version()
        self._consider(latest, "poll")
        if latest is None or latest not in self.refused:
            return
        newest = self.newest_version
        for version in reversed(self.store.versions()):
            if version >= latest or version in self.refused:
                continue
            if newest is not None and version <= newest:
                return
            self._consider(version, "poll")
            if version not in self.refused:
                return

    def _on_message(self, message: dict[str, Any] | None) -> None:
        if message is None:
            return
        if message["type"] == "subscribe":
            self.subscribed.set()
        elif message["type"] == "message":
            try:
                version = int(message["data"])
            except (TypeError, ValueError):
                return  # not ours to understand; the poll still finds every version
            self._consider(version, "pubsub")

    def _consider(self, version: int | None, via: Literal["pubsub", "poll"]) -> None:
        """Load ``version`` if it is newer than what we have (Redis errors propagate: retried)."""
        newest = self.newest_version
        if version is None or version in self.refused or (newest is not None and version <= newest):
            return
        times = self.times.setdefault(version, VersionTimes(version, time.time(), via))
        try:
            snapshot = self.store.load(version)
            if self.accept is not None:
                self.accept(snapshot)
        except (CheckpointError, ValueError) as e:
            # Tampered, unsigned, trimmed meanwhile, or not for this predictor: keep serving
            # the current version, and say so once per version.
            self.refused.add(version)
            self.log.error(
                "model version %d not taken: %s; serving version %s on",
                version,
                e,
                self.newest_version,
            )
            return
        self._up()  # Redis answered: say so before anyone hears of the new version
        with self._changed:
            times.created_at = snapshot.created_at
            times.loaded_at = time.time()
            self._newest = snapshot
            self._changed.notify_all()

    def _up(self) -> None:
        if not self.healthy:
            self.healthy = True
            self.log.info("model watcher of %s: Redis answers again", self.store.prefix)

    def _down(self, error: Exception) -> None:
        if self.healthy:
            self.healthy = False
            self.log.warning(
                "model watcher of %s: Redis unreachable (%s); serving version %s on, retrying",
                self.store.prefix,
                error,
                self.newest_version,
            )

    def _close(self, pubsub: Any) -> None:
        self.subscribed.clear()
        if pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                pubsub.close()
