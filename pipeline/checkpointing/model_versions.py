"""Model versions in Redis: what the learner publishes and predictors serve.

Keys, all under ``riverline:{pipeline}:`` (the prefix of :func:`~pipeline.checkpointing.trust.
key_prefix`, as for checkpoints):

- ``model:{version}``: a hash with ``blob`` (a pickled
  :class:`~pipeline.serving.snapshot.ServingSnapshot` in a zlib stream), ``meta`` (JSON) and
  ``sig`` (HMAC-SHA256 over both, with the checkpoint secret);
- ``model:latest``: the newest version; it never moves back (a learner restarted from an older
  checkpoint republishes versions predictors may already serve past);
- ``model:versions``: a sorted set of the kept versions (the last ``serving.keep``).

Each version is announced on the channel ``riverline:{pipeline}:models`` (the message is the
version number). A version is ``labels learned`` (plus one per challenger promoted by hand,
:attr:`pipeline.core.LearningCore.model_version`): the same number means the same model, so a
learner that republishes one after a restart changes nothing (the first write stays).

As with checkpoints, :meth:`ModelVersionStore.load` is the one place a blob is unpickled, and
only after its signature verifies (or the store was opened ``insecure``); ``meta`` and ``list``
read JSON only.
"""

from __future__ import annotations

import builtins
import json
import pickle
import time
import zlib
from typing import TYPE_CHECKING, Any

import redis

from pipeline.checkpointing.store import compression_level
from pipeline.checkpointing.trust import (
    FENCE_CHECK,
    CheckpointError,
    fence_arg,
    key_prefix,
    run_fenced,
    sign,
)
from pipeline.checkpointing.versions import SignedVersions
from pipeline.serving.snapshot import ServingSnapshot

if TYPE_CHECKING:
    from pipeline.config import RiverlineConfig

# Atomic: refuse a fenced-out writer; keep an existing version as it is (idempotent republish);
# else write it, index it, move `latest` forward only, and announce it.
# KEYS: fence, model:{v}, model:versions, model:latest; ARGV: token, version, blob, meta, sig,
# channel. Returns 1 if written, 0 if the version was there already.
PUBLISH = (
    FENCE_CHECK
    + """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
redis.call('HSET', KEYS[2], 'blob', ARGV[3], 'meta', ARGV[4], 'sig', ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[2])
local latest = redis.call('GET', KEYS[4])
if not latest or tonumber(latest) < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[4], ARGV[2])
end
redis.call('PUBLISH', ARGV[6], ARGV[2])
return 1
"""
)


class ModelVersionStore(SignedVersions[ServingSnapshot]):
    """The model versions of one pipeline, signed like its checkpoints."""

    kind = "model"
    noun = "model version"
    signed = (b"blob", b"meta")

    def __init__(
        self,
        client: redis.Redis,
        pipeline: str,
        secret: bytes | None,
        keep: int = 10,
        insecure: bool = False,
    ) -> None:
        # Without decode_responses every reply is bytes; redis-py types them as bytes | str.
        self.client: Any = client
        self.pipeline = pipeline
        self.prefix = key_prefix(pipeline)
        self.channel = self.prefix + "models"
        self.secret = secret
        self.insecure = insecure
        self.keep = keep
        self._publish = self.client.register_script(PUBLISH)

    @classmethod
    def for_config(cls, client: redis.Redis, config: RiverlineConfig) -> ModelVersionStore:
        """As the config says: its name, ``serving.keep``, the checkpoint secret and trust."""
        checkpoint = config.checkpoint
        return cls(
            client, config.name, checkpoint.secret_bytes(), config.serving.keep, checkpoint.insecure
        )

    def publish(self, snapshot: ServingSnapshot, token: int | None = None) -> int:
        """Write the version, move ``model:latest`` to it and announce it; returns the version.

        With a fencing ``token`` (the learner's lease's), the write is refused
        (:class:`~pipeline.checkpointing.trust.Fenced`) if a newer learner took the lease since.
        A version already stored is left as it is (and not announced again).
        """
        if snapshot.pipeline != self.pipeline:
            raise ValueError(
                f"a snapshot of pipeline {snapshot.pipeline!r} cannot be published as "
                f"{self.pipeline!r}"
            )
        payload = pickle.dumps(snapshot, protocol=pickle.HIGHEST_PROTOCOL)
        blob = zlib.compress(payload, compression_level(payload))
        meta = {
            **snapshot.meta(),
            "bytes": len(blob),
            "raw_bytes": len(payload),
            "published_at": time.time(),
        }
        meta_json = json.dumps(meta, sort_keys=True).encode()
        version = snapshot.version
        keys = [
            self.key("lease:fence"),
            self.key(f"model:{version}"),
            self.key("model:versions"),
            self.key("model:latest"),
        ]
        args = [fence_arg(token), version, blob, meta_json, sign(self.secret, blob, meta_json)]
        written = run_fenced(self._publish, keys, [*args, self.channel], "model version")
        if written:
            self._trim()
        return version

    def _trim(self) -> None:
        stale = self.client.zrange(self.key("model:versions"), 0, -self.keep - 1)
        latest = self.client.get(self.key("model:latest"))
        stale = [raw for raw in stale if raw != latest]  # the pointer never dangles
        if stale:
            pipe = self.client.pipeline(transaction=True)
            for raw in stale:
                pipe.delete(self.key(f"model:{int(raw)}"))
            pipe.zrem(self.key("model:versions"), *stale)
            pipe.execute()

    def load(self, version: int) -> ServingSnapshot:
        """The one place a model version is unpickled: only after its signature check."""
        fields = self._fields(version)
        try:
            snapshot = pickle.loads(zlib.decompress(fields.get(b"blob", b"")))
        except Exception as e:  # a verified blob can still come from another riverline version
            raise CheckpointError(
                f"{self.where(version)} cannot be read: {type(e).__name__}: {e}"
            ) from None
        if not isinstance(snapshot, ServingSnapshot) or snapshot.version != version:
            raise CheckpointError(f"{self.where(version)} does not hold model version {version}")
        return snapshot

    def delete_all(self) -> int:
        """Remove this pipeline's model versions (its ``model:*`` keys only), e.g. on a reset."""
        keys = list(self.client.scan_iter(match=self.prefix + "model:*", count=500))
        return int(self.client.delete(*keys)) if keys else 0

    def list(self) -> builtins.list[dict[str, Any]]:
        """The metadata of the kept versions, oldest first (JSON only: nothing unpickled)."""
        versions = self.versions()
        if not versions:
            return []
        pipe = self.client.pipeline(transaction=False)
        for version in versions:
            pipe.hget(self.key(f"model:{version}"), "meta")
        listed = []
        for version, raw in zip(versions, pipe.execute(), strict=True):
            if raw is None:
                continue
            try:
                listed.append(self.parse_meta(version, raw))
            except CheckpointError as e:  # listed as what it is, the others still shown
                listed.append({"version": version, "unreadable": str(e)})
        return listed
