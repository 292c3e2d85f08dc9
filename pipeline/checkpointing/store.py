"""Checkpoints in Redis: one signed, versioned unit of state and offsets per write.

Keys, all under ``riverline:{pipeline}:``:

- ``ckpt:{version}``: a hash with ``blob`` (a pickle in a zlib stream, compressed at level 1
  where that pays, else stored at level 0), ``offsets`` (JSON),
  ``meta`` (JSON) and ``sig`` (HMAC-SHA256 over the three);
- ``ckpt:latest``: the version to resume from; flipped in the same MULTI/EXEC as the write;
- ``ckpt:versions``: a sorted set of the kept versions; ``ckpt:counter``: the version counter;
- ``ckpt:pinned``: versions kept whatever ``keep`` says (the last one before a ``run --reset``).

Pickle from a writable Redis is code execution, so :meth:`CheckpointStore.load` is the one
place a blob is unpickled, and it refuses unless the signature verifies, or the store was opened
with ``insecure=True`` (``checkpoint.insecure: true``: Redis is trusted). Metadata (``meta``,
``versions``) is plain JSON and is read without unpickling anything.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from pipeline.checkpointing.trust import (
    FENCE_CHECK,
    CheckpointError,
    CheckpointTooLarge,
    Fenced,
    fence_arg,
    key_prefix,
    run_fenced,
    sign,
)
from pipeline.checkpointing.versions import SignedVersions

if TYPE_CHECKING:
    from pipeline.config import RiverlineConfig

Offsets = dict[tuple[str, int], int]

# The error classes live with the shared signing code; they are imported from here too.
__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointStore",
    "CheckpointTooLarge",
    "Fenced",
    "Offsets",
]

# Fault injection for the crash tests: SIGKILL this process during its Nth checkpoint, after
# the blob is built and before the atomic write (a background write's child SIGKILLs its parent
# too: the writer dies mid-write). Off unless the variable is set.
CRASH_ENV = "RIVERLINE_FAULT_SIGKILL_IN_CHECKPOINT"

# One atomic unit: refuse a writer whose fencing token is below the fence, else write the
# version and flip `latest` in the same script, so a reader never sees half a checkpoint.
SAVE = (
    FENCE_CHECK
    + """
redis.call('HSET', KEYS[2], 'blob', ARGV[3], 'offsets', ARGV[4], 'meta', ARGV[5], 'sig', ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[2])
redis.call('SET', KEYS[4], ARGV[2])
return 1
"""
)


# Compression is worth its time only where the state compresses: a forest's pickle (mostly
# float arrays) shrinks by ~20% at zlib level 1 and takes longer to compress than to pickle,
# while a linear model's state (join buffer, metrics) shrinks fourfold. Slices spread over the
# pickle decide; level 0 is still a zlib stream (stored blocks), so every reader loads either
# kind unchanged.
SAMPLE_SLICES = 8
SLICE_BYTES = 16 * 1024
SMALL_PAYLOAD = 1024 * 1024
WORTH_COMPRESSING = 0.6  # compress when the sample shrinks to at most this fraction


def compression_level(payload: bytes) -> int:
    """zlib level for a pickled state: 1 (fast) if a sample of it compresses well, else 0.

    >>> compression_level(b"a" * 2_000_000), compression_level(os.urandom(2_000_000))
    (1, 0)
    """
    if len(payload) <= SMALL_PAYLOAD:
        return 1
    step = (len(payload) - SLICE_BYTES) // (SAMPLE_SLICES - 1)
    sample = b"".join(payload[i * step : i * step + SLICE_BYTES] for i in range(SAMPLE_SLICES))
    return 1 if len(zlib.compress(sample, 1)) <= WORTH_COMPRESSING * len(sample) else 0


@dataclass(frozen=True)
class Checkpoint:
    version: int
    state: Any
    offsets: Offsets
    meta: dict[str, Any]


def _offsets_to_json(offsets: Offsets) -> str:
    return json.dumps(sorted([t, p, o] for (t, p), o in offsets.items()))


def _offsets_from_json(text: str) -> Offsets:
    return {(t, int(p)): int(o) for t, p, o in json.loads(text)}


class CheckpointStore(SignedVersions[Checkpoint]):
    """The checkpoints of one pipeline.

    ``secret`` signs every write and is checked on every load; without one, :meth:`load`
    refuses unless ``insecure`` is set.
    """

    kind = "ckpt"
    noun = "checkpoint"
    signed = (b"blob", b"offsets", b"meta")

    def __init__(
        self,
        client: redis.Redis,
        pipeline: str,
        secret: bytes | None,
        keep: int = 5,
        insecure: bool = False,
        max_bytes: int | None = None,
    ) -> None:
        # Without decode_responses every reply is bytes; redis-py types them as bytes | str.
        self.client: Any = client
        self.prefix = key_prefix(pipeline)
        self.secret = secret
        self.insecure = insecure
        self.keep = keep
        self.max_bytes = max_bytes  # a larger blob is refused before Redis sees it
        self._save = self.client.register_script(SAVE)
        self.saves = 0
        self.fault_pids: tuple[int, ...] = ()  # killed with this process by the crash hook

    def with_client(self, client: redis.Redis) -> CheckpointStore:
        """The same store on another connection (a forked child's), its save count kept."""
        other = CheckpointStore(client, "", self.secret, self.keep, self.insecure, self.max_bytes)
        other.prefix, other.saves = self.prefix, self.saves
        return other

    @classmethod
    def for_config(cls, client: redis.Redis, config: RiverlineConfig) -> CheckpointStore:
        """The store as a pipeline's config says: its name, secret, ``insecure`` and ``keep``."""
        checkpoint = config.checkpoint
        return cls(
            client,
            config.name,
            checkpoint.secret_bytes(),
            checkpoint.keep,
            checkpoint.insecure,
            checkpoint.max_bytes,
        )

    def _sign(self, *parts: bytes) -> str:
        return sign(self.secret, *parts)

    def save(
        self,
        state: Any,
        offsets: Offsets,
        meta: dict[str, Any] | None = None,
        token: int | None = None,
        ready: Callable[[], None] | None = None,
    ) -> int:
        """Write a new version and make it the latest, atomically; returns the version.

        With a fencing ``token``, the write is refused (:class:`Fenced`) if a newer writer
        has taken the pipeline's lease since. ``ready`` is called once the state is packed,
        before anything reaches Redis: it may wait (an asynchronous checkpoint waits there for
        its outputs' acknowledgement) or raise to write nothing.
        """
        payload = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        blob = zlib.compress(payload, compression_level(payload))
        if self.max_bytes is not None and len(blob) > self.max_bytes:
            # Redis would close the connection on it (proto-max-bulk-len), which reads as an
            # outage and is retried for ever: say what it is instead.
            raise CheckpointTooLarge(
                f"checkpoint of {len(blob):,} bytes "
                f"(compressed; {len(payload):,} pickled) is larger than checkpoint.max_bytes "
                f"({self.max_bytes:,}); one checkpoint is one Redis value, refused over Redis' "
                "proto-max-bulk-len (512 MiB by default). Bound the state: lower "
                "join.max_pending_bytes or join.max_pending (events waiting for labels), or use "
                "a smaller model; raise checkpoint.max_bytes only as far as Redis' "
                "proto-max-bulk-len allows"
            )
        if ready is not None:
            ready()
        version = int(self.client.incr(self.key("ckpt:counter")))
        meta = {
            **(meta or {}),
            "version": version,
            "written_at": time.time(),
            "bytes": len(blob),
            "raw_bytes": len(payload),
        }
        offsets_json = _offsets_to_json(offsets).encode()
        meta_json = json.dumps(meta, sort_keys=True).encode()
        signature = self._sign(blob, offsets_json, meta_json)
        keys = [
            self.key("lease:fence"),
            self.key(f"ckpt:{version}"),
            self.key("ckpt:versions"),
            self.key("ckpt:latest"),
        ]
        self.saves += 1
        if os.environ.get(CRASH_ENV) == str(self.saves):
            for pid in (*self.fault_pids, os.getpid()):
                os.kill(pid, signal.SIGKILL)
        run_fenced(
            self._save,
            keys,
            [fence_arg(token), version, blob, offsets_json, meta_json, signature],
            "checkpoint",
        )
        self._trim()
        return version

    def rollback(self, version: int) -> None:
        """Make an older version the latest; its signature is checked first (nothing unpickled)."""
        self.verify(version)
        self.client.set(self.key("ckpt:latest"), version)

    def pin(self, version: int) -> None:
        """Keep this version whatever ``keep`` says (until the pipeline's keys are deleted)."""
        self.client.sadd(self.key("ckpt:pinned"), version)

    def pinned(self) -> set[int]:
        return {int(v) for v in self.client.smembers(self.key("ckpt:pinned"))}

    def _trim(self) -> None:
        pinned = {str(v).encode() for v in self.pinned()}
        stale = [
            raw
            for raw in self.client.zrange(self.key("ckpt:versions"), 0, -self.keep - 1)
            if raw not in pinned
        ]
        if stale:
            pipe = self.client.pipeline(transaction=True)
            for raw in stale:
                pipe.delete(self.key(f"ckpt:{int(raw)}"))
            pipe.zrem(self.key("ckpt:versions"), *stale)
            pipe.execute()

    def load(self, version: int) -> Checkpoint:
        """The one place a checkpoint is unpickled: only after :meth:`_fields` let it through."""
        fields = self._fields(version)
        blob, offsets_json = fields.get(b"blob", b""), fields.get(b"offsets", b"")
        meta_json = fields.get(b"meta", b"")
        try:
            state = pickle.loads(zlib.decompress(blob))
            offsets = _offsets_from_json(offsets_json.decode())
            meta = json.loads(meta_json)
        except Exception as e:  # a verified blob can still come from another riverline version
            raise CheckpointError(
                f"{self.where(version)} cannot be read: {type(e).__name__}: {e}"
            ) from None
        return Checkpoint(version, state, offsets, meta)

    def delete_all(self) -> int:
        """Remove every key of this pipeline (its own prefix only)."""
        keys = list(self.client.scan_iter(match=self.prefix + "*", count=500))
        return int(self.client.delete(*keys)) if keys else 0
