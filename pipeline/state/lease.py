"""One writer per pipeline: a lease in Redis with a fencing token.

Acquiring the lease draws a new token (``lease:counter``) and raises the pipeline's fence
(``lease:fence``) to it; checkpoint writes carry the writer's token and are refused when it is
below the fence (see ``CheckpointStore.save``). So a writer that lost its lease (paused, cut
off, or a second copy started by mistake) cannot overwrite the state of the one that took over,
even if it still believes it holds the lease.

A token is never below the Redis server's clock in microseconds at the time it is drawn (and
always above the counter): a Redis that restarts without its data forgets the counter, and a
plain counter would then hand a standby the old writer's token again, letting the old writer's
writes through. Drawn from the clock, the successor's token is above every token drawn before,
unless the server's clock steps back by more than the time since the last acquisition.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder then
  local owner, token = string.match(holder, '^(.*) (%d+)$')
  if owner == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(token)
  end
  return nil
end
local now = redis.call('TIME')
local token = math.max(
  tonumber(redis.call('GET', KEYS[2]) or '0') + 1,
  tonumber(now[1]) * 1000000 + tonumber(now[2])  -- exact in a double until the year 2255
)
token = string.format('%.0f', token)  -- digits, never a float's exponent form
redis.call('SET', KEYS[2], token)
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. token, 'PX', ARGV[2])
redis.call('SET', KEYS[3], token)
return tonumber(token)
"""

# Extend our lease; if it vanished (expired during a pause or an outage, or a Redis that lost
# its data) and nobody drew a token since ours, take it back *with the same token*: a new token
# would raise the fence above a checkpoint write already on its way with the old one.
RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder then
  if holder == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[3])
  end
  return 0
end
local fence = redis.call('GET', KEYS[2])
if fence and fence ~= ARGV[2] then
  return 0
end
if not fence then
  redis.call('SET', KEYS[2], ARGV[2])
  if tonumber(redis.call('GET', KEYS[3]) or '0') < tonumber(ARGV[2]) then
    redis.call('SET', KEYS[3], ARGV[2])
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaseLost(RuntimeError):
    """Another writer holds the pipeline now: this one must stop without writing."""


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Lease:
    def __init__(self, client: Any, pipeline: str, ttl_ms: int, owner: str | None = None) -> None:
        prefix = f"riverline:{pipeline}:"
        self.client = client
        self.key = prefix + "lease"
        self.counter_key = prefix + "lease:counter"
        self.fence_key = prefix + "lease:fence"
        self.ttl_ms = ttl_ms
        self.owner = owner or default_owner()
        self.token: int | None = None
        self._acquire = client.register_script(ACQUIRE)
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(RELEASE)

    @property
    def value(self) -> str:
        return f"{self.owner} {self.token}"

    def try_acquire(self) -> bool:
        """Take the lease if free (or already ours); a fresh lease gets a new token."""
        token = self._acquire(
            keys=[self.key, self.counter_key, self.fence_key], args=[self.owner, self.ttl_ms]
        )
        if token is None:
            return False
        self.token = int(token)
        return True

    def renew(self) -> None:
        """Extend the lease, or take it back if it lapsed and nobody else took it since."""
        if self.token is None:
            raise LeaseLost("the lease was never acquired")
        keys = [self.key, self.fence_key, self.counter_key]
        if self._renew(keys=keys, args=[self.value, self.token, self.ttl_ms]):
            return
        fence = self.client.get(self.fence_key)
        raise LeaseLost(
            f"lease of {self.key} is now held by {self.holder() or 'nobody'} (fence "
            f"{fence.decode() if isinstance(fence, bytes) else fence}, ours {self.token})"
        )

    def holder(self) -> str | None:
        raw = self.client.get(self.key)
        return raw.decode() if isinstance(raw, bytes) else raw

    def release(self) -> None:
        if self.token is not None:
            self._release(keys=[self.key], args=[self.value])
