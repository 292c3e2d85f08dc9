"""Checkpoint writes in a forked child, as Redis's BGSAVE: the event path pays for a fork only.

The writer forks under its state lock, so the child's memory is a copy-on-write snapshot of the
state and offsets at that instant. The child (only the forking thread exists in it) pickles,
compresses, signs and writes that snapshot with the same fenced script as a synchronous write,
on a Redis connection of its own, reports the outcome on a pipe and leaves with ``os._exit``:
no ``atexit`` handler, destructor or garbage collection runs in it, so it never touches the
parent's Kafka clients (librdkafka's threads do not exist in a forked child). The parent serves
on and collects the outcome with :meth:`BackgroundSave.poll`.

An asynchronous checkpoint (``held``) is forked before the outputs of the records it covers are
acknowledged, as a Flink barrier is taken before the sinks commit: the child packs the state at
once and then waits on a second pipe. The parent says :meth:`BackgroundSave.go` once the broker
acknowledged every output sent before the fork; until then nothing reaches Redis, and a child
told nothing (the parent died, or the outputs failed: :meth:`BackgroundSave.kill`) writes
nothing.

A child dies with its parent (``PR_SET_PDEATHSIG`` on Linux): a SIGKILLed writer leaves no
write behind it that could land later.

>>> supported()
True
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from pipeline.checkpointing.store import CheckpointStore, CheckpointTooLarge, Fenced, Offsets

# Exit statuses of a child: written, Redis refused or unreachable, fenced, anything else, and
# not told to write (a held checkpoint whose parent went away).
WRITTEN, REDIS_ERROR, FENCED, FAILED, NOT_TOLD = 0, 1, 2, 3, 4
GO = b"g"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

# Fault injection for the failure-path tests: a child whose write is the Nth background write
# fails with a Redis error instead of writing. Off unless the variable is set.
FAIL_ENV = "RIVERLINE_FAULT_BACKGROUND_WRITE_FAILS"


def supported() -> bool:
    """Whether this platform can fork (POSIX); elsewhere checkpoints stay synchronous."""
    return hasattr(os, "fork")


@dataclass(frozen=True)
class Outcome:
    """What a child reported: the version written, or why not (``fenced``: lease lost)."""

    version: int | None
    error: str | None = None
    fenced: bool = False
    milliseconds: float = 0.0  # the child's write, pickle to Redis reply
    too_large: bool = False  # over checkpoint.max_bytes: retrying cannot help


class BackgroundSave:
    """One checkpoint write in flight in a child process."""

    def __init__(self, pid: int, pipe: int, started: float, go_pipe: int | None = None) -> None:
        self.pid = pid
        self.pipe = pipe
        self.started = started
        self._go_pipe = go_pipe  # a held write's: written to once, to let it write

    @property
    def held(self) -> bool:
        """Whether the child still waits for :meth:`go`."""
        return self._go_pipe is not None

    def go(self) -> None:
        """Let a held child write: every output before its snapshot is acknowledged."""
        if self._go_pipe is not None:
            with contextlib.suppress(OSError):  # a child already dead reports so on poll
                os.write(self._go_pipe, GO)
            os.close(self._go_pipe)
            self._go_pipe = None

    @classmethod
    def start(
        cls,
        store: CheckpointStore,
        state: Any,
        offsets: Offsets,
        meta: dict[str, Any],
        token: int | None,
        held: bool = False,
    ) -> BackgroundSave:
        """Fork a child that writes ``state`` and ``offsets`` as one version; ``held``: only
        once told :meth:`go` (it packs the state meanwhile).

        Call it where nothing moves the state (under the writer's lock): the fork is the
        snapshot. ``store.saves`` counts the write here, as a synchronous save does.
        """
        parent = os.getpid()
        store.saves += 1
        read_end, write_end = os.pipe()
        go_read, go_write = os.pipe() if held else (None, None)
        started = time.perf_counter()
        with warnings.catch_warnings():
            # Python 3.12+ warns about forking a threaded process: the child here only runs
            # its own thread's code and leaves with os._exit, which is the safe use.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; its outcome is what the tests check
            os.close(read_end)
            if go_write is not None:
                os.close(go_write)
            status = _child(parent, store, state, offsets, meta, token, write_end, go_read)
            os._exit(status)
        os.close(write_end)
        if go_read is not None:
            os.close(go_read)
        os.set_blocking(read_end, False)
        return cls(pid, read_end, started, go_write)

    def poll(self, block: bool = False) -> Outcome | None:
        """The outcome once the child has exited; None while it runs (unless ``block``)."""
        pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        if pid == 0:
            return None
        try:
            message = os.read(self.pipe, 1 << 16)
        except BlockingIOError:
            message = b""
        finally:
            os.close(self.pipe)
        if os.WIFSIGNALED(status):
            return Outcome(None, f"checkpoint child killed by signal {os.WTERMSIG(status)}")
        try:
            reported = json.loads(message)
        except ValueError:
            reported = {"error": f"checkpoint child exited {os.waitstatus_to_exitcode(status)}"}
        return Outcome(
            reported.get("version"),
            reported.get("error"),
            bool(reported.get("fenced")),
            float(reported.get("ms", 0.0)),
            bool(reported.get("too_large")),
        )

    def kill(self) -> None:
        """Stop the child and reap it (a stopping or fenced writer); its write may not land.
        A held child told nothing writes nothing."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.poll(block=True)
        if self._go_pipe is not None:
            os.close(self._go_pipe)
            self._go_pipe = None


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel SIGKILLs this child when its parent dies (a SIGKILLed writer)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os._exit(FAILED)


class NotTold(Exception):
    """A held child's parent closed the pipe without saying go (it died, or gave up)."""


def _told(go_pipe: int | None) -> Callable[[], None] | None:
    """The child's wait for :data:`GO` (none for a write that is not held)."""
    if go_pipe is None:
        return None

    def wait() -> None:
        if os.read(go_pipe, 1) != GO:
            raise NotTold("the writer did not let this checkpoint be written")

    return wait


def _fresh_client(client: Any) -> redis.Redis:
    """A client on a new pool with the same settings: the inherited pool's lock may have been
    held by another parent thread at the fork (redis-py's own reset after a fork takes it)."""
    pool = client.connection_pool
    fresh = type(pool)(connection_class=pool.connection_class, **pool.connection_kwargs)
    return redis.Redis(connection_pool=fresh)


def _child(
    parent: int,
    store: CheckpointStore,
    state: Any,
    offsets: Offsets,
    meta: dict[str, Any],
    token: int | None,
    pipe: int,
    go_pipe: int | None,
) -> int:  # pragma: no cover - runs in the forked child
    # No collection: a finalizer could reach a Kafka client, and it would copy every page.
    gc.disable()
    _die_with_parent(parent)
    # Ctrl-C is for the parent, which waits for this write; SIGTERM (the parent's stop
    # handler, inherited) just ends the child. The forking thread is the child's main thread.
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    started = time.perf_counter()
    reply: dict[str, Any]
    try:
        child = store.with_client(_fresh_client(store.client))
        child.fault_pids = (parent,)  # the crash test's SIGKILL takes the parent down too
        child.saves -= 1  # counted by the parent already; save() counts it again
        if os.environ.get(FAIL_ENV) == str(store.saves):
            raise redis.ConnectionError("fault injected: background write fails")
        version = child.save(state, offsets, meta, token=token, ready=_told(go_pipe))
        reply, status = {"version": version}, WRITTEN
    except NotTold as e:
        reply, status = {"error": str(e)}, NOT_TOLD
    except Fenced as e:
        reply, status = {"error": str(e), "fenced": True}, FENCED
    except CheckpointTooLarge as e:
        reply, status = {"error": str(e), "too_large": True}, FAILED
    except redis.RedisError as e:
        reply, status = {"error": f"{type(e).__name__}: {e}"}, REDIS_ERROR
    except BaseException as e:
        reply, status = {"error": f"{type(e).__name__}: {e}"}, FAILED
    reply["ms"] = (time.perf_counter() - started) * 1000.0
    with contextlib.suppress(OSError):
        os.write(pipe, json.dumps(reply).encode())
    return status
