"""Reach Redis: the configured URL, waited for with backoff, or a clear message.

Only ``demo`` and the tests may fall back to a private, throwaway redis-server
(:func:`resolve_redis_url`): a long-running role given a Redis that does not answer waits for
it (:func:`wait_for_redis`) and then stops, rather than checkpoint into a Redis that vanishes.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import subprocess
import tempfile
import time

import redis

from pipeline.kafka.embedded import free_port, wait_for_port

log = logging.getLogger(__name__)


class RedisUnavailable(RuntimeError):
    """No Redis answered and none could be started."""


def ping(url: str, timeout: float = 1.0) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


def start_private_redis() -> tuple[str, subprocess.Popen[bytes]]:
    """A throwaway redis-server on a free loopback port, keeping nothing on disk."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailable("redis-server is not on PATH")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="riverline-redis-")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    if not wait_for_port("127.0.0.1", port, 10.0):
        process.kill()
        raise RedisUnavailable(f"a private redis-server did not start on port {port}")
    return f"redis://127.0.0.1:{port}/0", process


def resolve_redis_url(url: str, allow_private: bool = True) -> str:
    """The URL to use: the configured one if it answers, else a private server's.

    For ``demo`` and the tests only: checkpoints written to a private server are gone when the
    process exits.
    """
    if ping(url):
        return url
    if allow_private and shutil.which("redis-server"):
        private_url, process = start_private_redis()
        atexit.register(process.terminate)
        log.warning("Redis at %s did not answer; started a private one at %s", url, private_url)
        return private_url
    raise unreachable(url)


def unreachable(url: str, detail: str = "did not answer") -> RedisUnavailable:
    return RedisUnavailable(
        f"Redis at {url} {detail}. Start one (e.g. `redis-server`), or point --redis-url / "
        "RIVERLINE_REDIS_URL at yours."
    )


def wait_for_redis(url: str, seconds: float) -> None:
    """Return once Redis at ``url`` answers a PING; retry with backoff for up to ``seconds``.

    Logs once when the first attempt fails; raises :class:`RedisUnavailable` when the time is
    up. Ctrl-C interrupts the wait (KeyboardInterrupt).

    >>> wait_for_redis("redis://127.0.0.1:1/0", 0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pipeline.state.redis_client.RedisUnavailable: Redis at redis://127.0.0.1:1/0 did not answer ...
    """
    deadline = time.monotonic() + seconds
    delay = 0.1
    logged = False
    while True:
        left = deadline - time.monotonic()
        if ping(url, timeout=max(0.1, min(1.0, left))):
            if logged:
                log.info("Redis at %s answers", url)
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise unreachable(url, f"did not answer within {seconds:g}s")
        if not logged:
            log.warning("Redis at %s does not answer; retrying for up to %gs", url, seconds)
            logged = True
        time.sleep(min(delay, left))
        delay = min(delay * 2, 2.0)


def connect(url: str) -> redis.Redis:
    # Short timeouts: during an outage the consumer must keep serving, not hang on a socket.
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10)
