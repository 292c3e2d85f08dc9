"""What every signed, fenced write to Redis shares: key names, signatures, the fence.

Both the checkpoints (:mod:`pipeline.checkpointing.store`) and the model versions
(:mod:`pipeline.checkpointing.model_versions`) are pickles in Redis, and pickle from a writable
Redis is code execution: each is signed with HMAC-SHA256 on writing and checked here before
anything is unpickled.

>>> signature = sign(b"k", b"blob", b"{}")
>>> check_signature("thing", b"k", False, signature, b"blob", b"{}")
>>> try:
...     check_signature("thing", b"k", False, signature, b"evil", b"{}")
... except CheckpointError as e:
...     print(e)
thing failed its signature check (altered, or signed with another secret); refusing to load it
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import redis

# The Lua lines that refuse a writer whose fencing token is below the pipeline's fence; the
# script's KEYS[1] is ``lease:fence`` and ARGV[1] the token ('' for an unfenced writer).
# A fenced writer finding no fence at all means Redis lost the lease's state (a restart
# without its data): it must not write until its lease is taken back with its token, or until
# it learns that a successor holds it (see :class:`LeaseVanished`).
FENCE_CHECK = """
if ARGV[1] ~= '' then
  local fence = redis.call('GET', KEYS[1])
  if not fence then
    return redis.error_reply('NOFENCE no fence for token ' .. ARGV[1])
  end
  if tonumber(fence) > tonumber(ARGV[1]) then
    return redis.error_reply('FENCED fence ' .. fence .. ' above token ' .. ARGV[1])
  end
end
"""


class CheckpointError(RuntimeError):
    """A checkpoint (or model version) that cannot be trusted or read."""


class CheckpointTooLarge(CheckpointError):
    """A checkpoint over ``checkpoint.max_bytes``: Redis would refuse it (a config matter, not
    an outage: retrying cannot help)."""


class Fenced(CheckpointError):
    """The write came from a writer whose lease was taken over; nothing was written."""


class LeaseVanished(redis.RedisError):
    """A fenced write found no fence: Redis lost the lease's keys; nothing was written.

    A Redis error, so every writer retries it as it retries an outage: meanwhile its lease
    renewal either takes the lease back with the same token (nobody acquired since) and the
    retry lands, or finds a successor holding it and the writer stops (``LeaseLost``).
    """


def key_prefix(pipeline: str) -> str:
    """Every Redis key of a pipeline starts with this.

    >>> key_prefix("fraud") + "ckpt:latest"
    'riverline:fraud:ckpt:latest'
    """
    return f"riverline:{pipeline}:"


def fence_arg(token: int | None) -> str:
    """The script argument for a writer's fencing token ('' writes unfenced)."""
    return "" if token is None else str(token)


def run_fenced(script: Any, keys: list[str], args: list[Any], what: str) -> Any:
    """Run a script that starts with :data:`FENCE_CHECK`; a refusal raises :class:`Fenced`."""
    try:
        return script(keys=keys, args=args)
    except redis.ResponseError as e:
        if "FENCED" in str(e):
            raise Fenced(f"{what} refused: {e}") from None
        if "NOFENCE" in str(e):
            raise LeaseVanished(
                f"{what} not written: the pipeline's lease is gone from Redis (restarted "
                "without its data?); retried once the lease is taken back"
            ) from None
        raise


def sign(secret: bytes | None, *parts: bytes) -> str:
    """HMAC-SHA256 over the parts, each length-prefixed (no two splits sign alike); '' unsigned."""
    if secret is None:
        return ""
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(len(part).to_bytes(8, "big"))
        mac.update(part)
    return mac.hexdigest()


def check_signature(
    where: str, secret: bytes | None, insecure: bool, signature: str | bytes, *parts: bytes
) -> None:
    """Raise :class:`CheckpointError` unless the parts may be unpickled.

    Without a secret nothing can be checked: refused unless ``insecure`` (Redis trusted).
    ``signature`` is the stored field as it is: anyone who can write Redis chooses its bytes,
    so it is compared as bytes (``compare_digest`` on text raises for non-ASCII, and decoding
    raises for invalid UTF-8: either would stop the reader instead of refusing the version).
    """
    if secret is None:
        if insecure:
            return
        raise CheckpointError(
            f"{where} cannot be verified: no checkpoint secret is set "
            "(RIVERLINE_CHECKPOINT_SECRET or checkpoint.secret); refusing to load it "
            "(checkpoint.insecure: true skips the check where Redis is trusted)"
        )
    if not signature:
        raise CheckpointError(f"{where} is not signed; refusing to load it")
    stored = signature.encode("utf-8", "surrogatepass") if isinstance(signature, str) else signature
    if not hmac.compare_digest(stored, sign(secret, *parts).encode("ascii")):
        raise CheckpointError(
            f"{where} failed its signature check "
            "(altered, or signed with another secret); refusing to load it"
        )


def how_checked(secret: bytes | None) -> str:
    """What ``show`` commands print about a version that passed :func:`check_signature`."""
    return "verified" if secret is not None else "not checked (checkpoint.insecure: true)"
