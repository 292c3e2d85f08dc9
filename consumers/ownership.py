"""Who may write a pipeline's state: the writer lease, waited for, renewed and given back.

One writer per pipeline (``run`` or ``learner``); any other process started with the same name
waits as a standby and takes over when the lease lapses.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import redis

from consumers.signals import StopFlag
from pipeline.state.lease import Lease, LeaseLost

log = logging.getLogger(__name__)


class Ownership:
    """The lease of one writer process: standby until held, renewed from a thread of its own.

    ``check()`` raises :class:`LeaseLost` in the writer's loop once another writer took it, so
    the loop stops at once without writing.
    """

    def __init__(self, lease: Lease, pipeline: str, stop: StopFlag) -> None:
        self.lease = lease
        self.pipeline = pipeline
        self.stop = stop
        self.lost: LeaseLost | None = None
        self.held = False
        self.waiting = False
        self._stop_keeping = threading.Event()

    @property
    def token(self) -> int | None:
        return self.lease.token

    @property
    def owner(self) -> str:
        return self.lease.owner

    def wait(self) -> bool:
        """Standby until the lease is ours; False if asked to stop first."""
        announced = False
        self.waiting = True
        try:
            return self._wait(announced)
        finally:
            self.waiting = False

    def _wait(self, announced: bool) -> bool:
        while not self.stop.is_set():
            try:
                if self.lease.try_acquire():
                    log.info(
                        "pipeline %s: writer lease acquired (token %s)",
                        self.pipeline,
                        self.lease.token,
                    )
                    self.held = True
                    return True
                if not announced:
                    log.info(
                        "pipeline %s: standby, lease held by %s", self.pipeline, self.lease.holder()
                    )
                    announced = True
            except redis.RedisError as e:
                log.warning("Redis unavailable while acquiring the lease: %s", e)
            time.sleep(min(1.0, self.lease.ttl_ms / 4000))
        return False

    def keep(self) -> None:
        """Renew from a thread: a poll can block for seconds in a group join."""
        threading.Thread(target=self._keep, name="lease", daemon=True).start()

    def _keep(self) -> None:
        interval = self.lease.ttl_ms / 3000
        warned = False
        while not self._stop_keeping.wait(interval):
            try:
                self.lease.renew()
                warned = False
            except LeaseLost as e:
                self.lost = e
                return
            except redis.RedisError as e:
                # The checkpoint path notices the outage too; the lease is renewed once back.
                if not warned:
                    log.warning("cannot renew the lease: %s", e)
                    warned = True

    def check(self) -> None:
        if self.lost is not None:
            raise self.lost

    def release(self) -> None:
        """Stop renewing and give the lease back (at once, not after its TTL)."""
        self._stop_keeping.set()
        self.held = False
        with contextlib.suppress(redis.RedisError):
            self.lease.release()

    def abandon(self) -> None:
        """Stop renewing without releasing: a fenced writer no longer owns what it would free."""
        self._stop_keeping.set()
        self.held = False
