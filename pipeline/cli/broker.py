"""`riverline broker`: the embedded Kafka-compatible broker, in the foreground."""

from __future__ import annotations

import socket
import time
from typing import Annotated

import typer

from pipeline.cli.app import app
from pipeline.cli.common import console, friendly_errors


def port_is_free(port: int) -> bool:
    """Whether nothing listens on the loopback port (Tansu would fail, or we'd talk to it).

    >>> with socket.socket() as taken:
    ...     taken.bind(("127.0.0.1", 0))
    ...     taken.listen()
    ...     port_is_free(taken.getsockname()[1])
    False
    """
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@app.command()
def broker(
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Listen here; unset: a free port.", show_default=False),
    ] = None,
) -> None:
    """Run the embedded broker (Tansu, in memory) until Ctrl-C; prints the export line to use."""
    from consumers.signals import StopFlag
    from pipeline.kafka.embedded import BrokerUnavailable, EmbeddedBroker

    with friendly_errors():
        if port is not None and not port_is_free(port):
            raise BrokerUnavailable(f"port {port} is in use on 127.0.0.1; pick another --port")
        stop = StopFlag()
        stop.install()
        with EmbeddedBroker(port=port) as embedded:
            # stdout holds only the line to paste (or eval); the rest goes to stderr.
            print(f"export RIVERLINE_KAFKA_BOOTSTRAP={embedded.bootstrap}", flush=True)
            console.print(
                f"embedded broker (Tansu) on {embedded.bootstrap}; it keeps everything in memory, "
                "so topics are gone once it stops. Ctrl-C stops it.",
                highlight=False,
            )
            process = embedded.process
            while not stop.is_set():
                if process is not None and process.poll() is not None:
                    raise BrokerUnavailable(
                        f"the embedded broker exited with status {process.returncode}; "
                        f"its log is {embedded.log_path}"
                    )
                time.sleep(0.2)
        console.print(f"broker stopped ({stop.reason})", highlight=False)
