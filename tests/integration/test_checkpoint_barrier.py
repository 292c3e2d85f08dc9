"""Asynchronous checkpoints: the barrier on the outputs, and the held child that waits for it.

A checkpoint's offsets move past records whose outputs must then be in the broker. The writer
forks at once and carries on; the child packs the state but writes it only once every output
sent before the fork is acknowledged. These tests hold the broker (SIGSTOP) to show the barrier
waits for it (confluent-kafka; kafka-python's writer flushes before it forks) and fails when
records time out, and that a held child writes nothing until it is told, and nothing at all
when it is dropped.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from consumers.checkpointer import Checkpointer
from pipeline.checkpointing.store import CheckpointStore
from pipeline.config import KafkaConfig, load_config
from pipeline.kafka.embedded import EmbeddedBroker
from pipeline.kafka.outputs import DurableOutputs
from pipeline.kafka.transport import confluent_installed, make_transport
from pipeline.state.redis_client import connect
from tests.conftest import Backends, delete_pipelines

pytestmark = pytest.mark.integration


def settle(check: Callable[[], bool | None], seconds: float) -> bool | None:
    """The barrier's answer once it has one, or None after ``seconds``."""
    deadline = time.monotonic() + seconds
    while (answer := check()) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return answer


def test_kafka_python_cannot_mark_without_waiting(stoppable_broker: EmbeddedBroker) -> None:
    """kafka-python's writer flushes before it forks (see its tracked sender's barrier)."""
    broker = stoppable_broker
    config = KafkaConfig(bootstrap=broker.bootstrap, client="kafka-python")
    transport = make_transport(config, broker.bootstrap)
    outputs = DurableOutputs(transport.producer, backoff_s=0.1)
    try:
        assert not outputs.marks_without_waiting
        _, check = outputs.barrier()
        assert check() is False  # never "acknowledged": a flush must cover it
    finally:
        outputs.close()


@pytest.mark.skipif(not confluent_installed(), reason="confluent-kafka not installed")
def test_a_barrier_waits_for_a_held_broker_and_fails_with_expired_records(
    stoppable_broker: EmbeddedBroker,
) -> None:
    client, broker = "confluent", stoppable_broker
    assert broker.process is not None
    config = KafkaConfig(bootstrap=broker.bootstrap, client=client, partitions=3)
    transport = make_transport(config, broker.bootstrap)
    topic = f"barrier-{client}"
    transport.ensure_topics([topic])
    outputs = DurableOutputs(
        lambda: transport.producer(delivery_timeout_ms=3000, request_timeout_ms=2000),
        backoff_s=0.1,
        flush_timeout_s=20.0,
    )

    def send(count: int) -> None:
        for n in range(count):
            outputs.send(topic, b"key-%d" % n, b"%d" % n, n % 3 if n % 2 else None)

    send(2000)
    first = outputs.barrier()
    assert settle(lambda: outputs.barrier_acknowledged(first), 20) is True

    pid = broker.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        send(500)
        held = outputs.barrier()
        send(100)  # after the barrier: not what it waits for, but held as well
        # Nothing can be acknowledged while the broker is stopped.
        assert settle(lambda: outputs.barrier_acknowledged(held), 1.0) is None
        # Each record times out (delivery_timeout_ms): the barrier says some failed.
        assert settle(lambda: outputs.barrier_acknowledged(held), 8) is False
    finally:
        os.kill(pid, signal.SIGCONT)
    # The flush sends the failed records again; the barrier is then past.
    assert outputs.flush()
    assert outputs.resent >= 500
    assert outputs.barrier_acknowledged(held) is True

    # A barrier after the recovery holds while the broker is stopped, then goes through.
    send(300)
    os.kill(pid, signal.SIGSTOP)
    try:
        send(200)
        late = outputs.barrier()
        assert settle(lambda: outputs.barrier_acknowledged(late), 0.5) is None
    finally:
        os.kill(pid, signal.SIGCONT)
    assert settle(lambda: outputs.barrier_acknowledged(late), 20) is True
    outputs.close()


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class State:
    """The one attribute a checkpointer reads from the state it writes."""

    def __init__(self, labels: int) -> None:
        self.labels = labels


@pytest.fixture
def checkpointer_config(backends: Backends) -> Iterator[Any]:
    name = f"test-held-{uuid.uuid4().hex[:10]}"
    yield load_config(None, {"name": name, "checkpoint": {"insecure": True}}, environ={})
    delete_pipelines(backends, {name})


def test_a_held_write_lands_only_once_told_and_never_when_dropped(
    backends: Backends, checkpointer_config: Any
) -> None:
    cfg = checkpointer_config
    store = CheckpointStore(connect(backends.redis), cfg.name, None, insecure=True)
    checkpointer = Checkpointer(store, cfg)
    lock = threading.RLock()
    marks: list[str] = []
    offsets = {("events", 0): 7}

    checkpointer.start(State(3), offsets, {}, None, lock, barrier=lambda: marks.append("b"))
    assert marks == ["b"] and checkpointer.holding
    offsets[("events", 0)] = 9  # moved on after the fork: not what the child holds
    time.sleep(1.0)  # the child has packed the state long since, and waits
    assert store.latest_version() is None
    assert checkpointer.collect() is None
    with pytest.raises(RuntimeError, match="after go"):
        checkpointer.collect(block=True)  # would wait for ever
    checkpointer.go()
    assert not checkpointer.holding
    version = checkpointer.collect(block=True)
    assert version is not None and store.latest_version() == version
    assert store.load(version).offsets == {("events", 0): 7}
    assert checkpointer.holds.summary()["count"] == 1

    checkpointer.start(State(5), offsets, {}, None, lock, barrier=lambda: marks.append("b"))
    checkpointer.drop_held()  # its outputs could not be delivered
    assert checkpointer.in_flight is None and not checkpointer.wanted
    time.sleep(0.5)
    assert store.latest_version() == version  # the dropped write never lands
    assert checkpointer.failures == 0 and checkpointer.healthy


def test_a_held_child_whose_writer_dies_writes_nothing(
    backends: Backends, checkpointer_config: Any
) -> None:
    """A writer SIGKILLed while its child is held: the child is not told, and leaves."""
    cfg = checkpointer_config
    store = CheckpointStore(connect(backends.redis), cfg.name, None, insecure=True)
    read_end, write_end = os.pipe()
    writer = os.fork()
    if writer == 0:  # pragma: no cover - the writer to be killed
        os.close(read_end)
        checkpointer = Checkpointer(store.with_client(connect(backends.redis)), cfg)
        checkpointer.start(State(1), {("events", 0): 1}, {}, None, threading.RLock(), lambda: 0)
        assert checkpointer.in_flight is not None
        os.write(write_end, b"%d" % checkpointer.in_flight.pid)
        time.sleep(60)
        os._exit(0)
    os.close(write_end)
    child = int(os.read(read_end, 32))
    os.close(read_end)
    os.kill(writer, signal.SIGKILL)
    os.waitpid(writer, 0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not alive(child):
            break
        time.sleep(0.05)
    else:
        pytest.fail("the held child outlived its writer")
    assert store.latest_version() is None
