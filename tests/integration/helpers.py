"""Small helpers shared by the integration tests: replay, consume, read a topic, compare."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from consumers.run import Consumer
from pipeline.config import RiverlineConfig
from pipeline.state.redis_client import connect
from producers.replay import ReplayResult, replay
from producers.schedule import parse_delay
from producers.sources import SourceOptions

# Fields that describe one process's run rather than the learning state.
RUN_FIELDS = ("run", "checkpoint_version")


def publish(
    cfg: RiverlineConfig, source: str, delay: str, limit: int | None = None
) -> ReplayResult:
    assert cfg.kafka.bootstrap is not None
    return replay(
        cfg, cfg.kafka.bootstrap, source, parse_delay(delay), options=SourceOptions(limit=limit)
    )


def consume(
    cfg: RiverlineConfig, until_idle: float = 1.5, **consumer_options: Any
) -> dict[str, Any]:
    assert cfg.kafka.bootstrap is not None
    consumer = Consumer(
        cfg,
        cfg.kafka.bootstrap,
        connect(cfg.redis.url),
        until_idle=until_idle,
        consumer_options=consumer_options,
    )
    return consumer.run()


def learning_state(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in RUN_FIELDS}


def read_topic(bootstrap: str, topic: str, timeout_s: float = 5.0) -> list[Any]:
    """Every record of a topic, from the start, without a consumer group."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        idle = 0.0
        while idle < timeout_s:
            batch = consumer.poll(timeout_ms=250)
            if not batch:
                idle += 0.25
                if records and all(
                    consumer.position(tp) >= (consumer.highwater(tp) or 0) for tp in tps
                ):
                    break
                continue
            idle = 0.0
            for recs in batch.values():
                records.extend(recs)
        return records
    finally:
        consumer.close()


def json_values(records: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in records]


def write_config(cfg: RiverlineConfig, path: Any) -> Any:
    """The config as a YAML file for a subprocess; the secret goes by environment instead."""
    import yaml

    data = json.loads(cfg.model_dump_json())
    data["checkpoint"]["secret"] = None
    path.write_text(yaml.safe_dump(data))
    return path


def run_cli(args: list[str], env: dict[str, str], **kw: Any) -> Any:
    """``riverline ARGS`` as a separate process (so it can be signalled or killed)."""
    import subprocess
    import sys

    streams: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *args], env=env, text=True, **{**streams, **kw}
    )


def crash_then_resume(
    config_file: Any, env: dict[str, str], report: Any, crashes: int = 1, idle: str = "3"
) -> dict[str, Any]:
    """``riverline run`` SIGKILLed inside its third checkpoint write (``crashes`` times), then
    run to the end: the final run's report, once it says it resumed from a checkpoint."""
    from pipeline.checkpointing.store import CRASH_ENV

    args = ["run", "--config", str(config_file), "--until-idle", idle]
    for _ in range(crashes):
        crash = run_cli(args, {**env, CRASH_ENV: "3"})
        crash.communicate(timeout=120)
        assert crash.returncode == -signal.SIGKILL
    final = run_cli([*args, "--report", str(report)], env)
    _, stderr = final.communicate(timeout=300)
    assert final.returncode == 0, stderr
    assert "resuming from checkpoint" in stderr
    return dict(json.loads(Path(report).read_text()))


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class TcpProxy:
    """A loopback TCP proxy that can cut every connection: a broker outage, as clients see it.

    While cut, connections are refused and open ones are closed; ``restore`` listens again.
    """

    def __init__(self, listen_port: int, target_port: int) -> None:
        self.listen_port = listen_port
        self.target_port = target_port
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server: socket.socket | None = None

    def start(self) -> TcpProxy:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.listen_port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()
        return self

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._server is not server:
                    # Cut while this one was being connected (a wider window under load): it
                    # must not outlive the cut, as a client that got through would.
                    client.close()
                    upstream.close()
                    return
                self._sockets.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def cut(self) -> None:
        with self._lock:
            server, self._server = self._server, None
            sockets, self._sockets = self._sockets, set()
        if server is not None:
            server.close()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.start()
