"""Reach Redis: the configured URL, else a private redis-server, else a clear message."""

from __future__ import annotations

import atexit
import logging
import shutil
import subprocess
import tempfile

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
    """The URL to use: the configured one if it answers, else a private server's."""
    if ping(url):
        return url
    if allow_private and shutil.which("redis-server"):
        private_url, process = start_private_redis()
        atexit.register(process.terminate)
        log.warning("Redis at %s did not answer; started a private one at %s", url, private_url)
        return private_url
    raise RedisUnavailable(
        f"Redis at {url} did not answer. Start one (e.g. `redis-server`, or "
        "`docker compose up -d redis`), or point --redis-url / RIVERLINE_REDIS_URL at yours."
    )


def connect(url: str) -> redis.Redis:
    # Short timeouts: during an outage the consumer must keep serving, not hang on a socket.
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10)
