"""The embedded broker starts where it says it does: a port that answers is not enough."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaAdminClient

from pipeline.kafka import embedded
from pipeline.kafka.embedded import BrokerUnavailable, EmbeddedBroker, broker_binary, listens

pytestmark = pytest.mark.integration


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process's listener holds (here: a plain socket of this one), as another
    test worker's broker would, between our free_port() and the broker's bind."""
    try:
        broker_binary()
    except BrokerUnavailable as e:
        pytest.skip(f"needs the embedded broker: {e}")
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield int(other.getsockname()[1])


def test_a_given_port_another_process_holds_is_refused(taken_port: int) -> None:
    with pytest.raises(BrokerUnavailable, match="another process holds the port"):
        EmbeddedBroker(port=taken_port, startup_timeout=10).start()


def test_a_port_taken_meanwhile_is_traded_for_another(
    taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """free_port() handed out a port someone took before the broker bound it: the broker
    starts on another, and clients reach it there (not the process that took the first)."""
    ports = iter([taken_port])
    real_free_port = embedded.free_port
    monkeypatch.setattr(embedded, "free_port", lambda: next(ports, None) or real_free_port())
    with EmbeddedBroker(startup_timeout=10) as broker:
        assert broker.port != taken_port and broker.advertised_port == broker.port
        assert broker.process is not None and listens(broker.process.pid, broker.port)
        admin: Any = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=5000)
        try:
            assert admin.describe_cluster()["brokers"]
        finally:
            admin.close()


def test_a_process_that_is_gone_listens_nowhere() -> None:
    """A broker that failed to bind leaves; asked about while it goes (a zombie: its fds are
    unreadable), it does not listen, rather than "cannot tell" taken for yes."""
    if listens(os.getpid(), 1) is None:
        pytest.skip("no /proc here: the check cannot be made")
    with socket.socket() as own:
        own.bind(("127.0.0.1", 0))
        own.listen()
        port = int(own.getsockname()[1])
        assert listens(os.getpid(), port) is True
    gone = subprocess.Popen(["sleep", "30"])
    gone.kill()
    time.sleep(0.2)  # a zombie until waited for
    assert listens(gone.pid, port) is False
    gone.wait()
    assert listens(gone.pid, port) is False
