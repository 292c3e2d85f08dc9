"""/metrics, /healthz and /readyz on one port, asked over real HTTP."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from pipeline.health import HealthServer, http_get
from pipeline.telemetry import PipelineMetrics, ReplayMetrics, serve_registry


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_pipeline_metrics_serve_all_three_paths_on_one_port() -> None:
    metrics = PipelineMetrics()
    port = metrics.serve(0)
    assert port > 0
    metrics.sync_counters(
        {"events": 7, "labels": 2, "served_by": {"heuristic": 7}, "dead_letters": {},
         "expired_unlabelled": 0, "drift": 0}
    )  # fmt: skip
    status, body = http_get(port, "/metrics")
    assert status == 200
    assert "riverline_events_total 7.0" in body
    assert 'riverline_predictions_total{source="heuristic"} 7.0' in body
    assert http_get(port, "/healthz") == (200, json.dumps({"status": "alive"}))
    # No role has said it is ready: not ready, and why.
    status, body = http_get(port, "/readyz")
    assert status == 503
    assert json.loads(body) == {"ready": False, "reason": "starting: readiness not reported yet"}
    # A role sets its check after the server started; each request asks it again.
    state = {"lease": False}
    metrics.readiness = lambda: (
        (True, "lease held") if state["lease"] else (False, "standby: lease held by other")
    )
    assert json.loads(http_get(port, "/readyz")[1])["reason"] == "standby: lease held by other"
    state["lease"] = True
    assert http_get(port, "/readyz") == (200, json.dumps({"ready": True, "reason": "lease held"}))
    assert metrics.server is not None
    metrics.server.close()


def test_a_failing_readiness_check_is_not_ready_and_the_server_lives_on() -> None:
    metrics = PipelineMetrics()
    port = metrics.serve(0)

    def broken() -> tuple[bool, str]:
        raise RuntimeError("no partitions yet")

    metrics.readiness = broken
    status, body = http_get(port, "/readyz")
    assert status == 503
    assert json.loads(body) == {
        "ready": False,
        "reason": "readiness check failed: RuntimeError: no partitions yet",
    }
    assert http_get(port, "/healthz")[0] == 200
    assert http_get(port, "/metrics")[0] == 200


def test_unknown_paths_are_404_and_a_fixed_port_is_honoured() -> None:
    port = free_port()
    server = HealthServer(PipelineMetrics().registry, port, lambda: (True, "ok"), addr="127.0.0.1")
    try:
        assert server.port == port
        status, body = http_get(port, "/nope")
        assert status == 404
        assert "/readyz" in json.loads(body)["error"]
    finally:
        server.close()
    with pytest.raises(OSError):
        http_get(port, "/healthz", timeout=1)  # closed: nothing listens any more


def test_replay_metrics_are_ready_while_serving() -> None:
    metrics = ReplayMetrics()
    metrics.emitted("event", 1.0)
    port = serve_registry(metrics.registry, 0)
    assert http_get(port, "/readyz") == (200, json.dumps({"ready": True, "reason": "alive"}))
    assert 'riverline_replay_published_total{kind="event"} 1.0' in http_get(port, "/metrics")[1]


def test_a_slow_readiness_check_does_not_block_health_or_scrapes() -> None:
    release = threading.Event()

    def slow() -> tuple[bool, str]:
        release.wait(10)
        return True, "done"

    metrics = PipelineMetrics()
    metrics.readiness = slow
    port = metrics.serve(0)
    answers: list[tuple[int, str]] = []
    waiting = threading.Thread(target=lambda: answers.append(http_get(port, "/readyz", timeout=15)))
    waiting.start()
    try:
        # One request per thread: these are answered while /readyz still waits.
        assert http_get(port, "/healthz")[0] == 200
        assert http_get(port, "/metrics")[0] == 200
        assert not answers
    finally:
        release.set()
        waiting.join(15)
    assert answers == [(200, json.dumps({"ready": True, "reason": "done"}))]
