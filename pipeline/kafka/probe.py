"""A short, bounded look at a Kafka bootstrap before any client is built.

kafka-python retries an unreachable bootstrap for about 30 seconds, logging warnings all along,
and then raises from deep inside; a command should say at once that nothing answers there.
"""

from __future__ import annotations

import logging
import socket
import time

from pipeline.config import ConfigError
from pipeline.kafka.embedded import BrokerUnavailable

log = logging.getLogger(__name__)


def bootstrap_addresses(bootstrap: str) -> list[tuple[str, int]]:
    """``host:port[,host:port]`` (an optional ``SCHEME://`` and ``[ipv6]`` allowed).

    >>> bootstrap_addresses("a:9092, PLAINTEXT://b:9093,[::1]:9094")
    [('a', 9092), ('b', 9093), ('::1', 9094)]
    >>> bootstrap_addresses("nohost")
    Traceback (most recent call last):
    ...
    pipeline.config.ConfigError: invalid configuration:
      kafka.bootstrap: 'nohost' is not host:port
    """
    addresses = []
    for part in bootstrap.split(","):
        text = part.strip().split("://", 1)[-1]
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(
                f"invalid configuration:\n  kafka.bootstrap: {part.strip()!r} is not host:port"
            )
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def probe_bootstrap(bootstrap: str, seconds: float = 5.0) -> None:
    """Return once one bootstrap address accepts a TCP connection; else BrokerUnavailable.

    Logs once when the first attempt fails; Ctrl-C interrupts the wait (KeyboardInterrupt).

    >>> probe_bootstrap("127.0.0.1:1", seconds=0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pipeline.kafka.embedded.BrokerUnavailable: Kafka at 127.0.0.1:1 did not answer within 0s ...
    """
    addresses = bootstrap_addresses(bootstrap)
    deadline = time.monotonic() + seconds
    delay = 0.1
    error = ""
    while True:
        for host, port in addresses:
            left = deadline - time.monotonic()
            try:
                with socket.create_connection((host, port), timeout=max(0.2, min(1.0, left))):
                    return
            except OSError as e:
                error = e.strerror or str(e)
        left = deadline - time.monotonic()
        if left <= 0:
            raise BrokerUnavailable(
                f"Kafka at {bootstrap} did not answer within {seconds:g}s ({error}); "
                "check --bootstrap / RIVERLINE_KAFKA_BOOTSTRAP"
            )
        if delay == 0.1:
            log.warning(
                "Kafka at %s does not answer (%s); retrying for %gs", bootstrap, error, seconds
            )
        time.sleep(min(delay, left))
        delay = min(delay * 2, 1.0)
