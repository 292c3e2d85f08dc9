"""One HTTP port per process: Prometheus' ``/metrics``, plus ``/healthz`` and ``/readyz``.

Orchestrators (docker compose, Kubernetes) ask two questions a scrape does not answer: is the
process alive (``/healthz``: 200 as long as it serves at all), and should it count as up
(``/readyz``: 200 only when the role's ``readiness`` callable says so, else 503, with the
reason as JSON). The role sets the callable: a learner is ready holding the lease or as a
healthy standby, a predictor once it has partitions and a model.

>>> from prometheus_client import CollectorRegistry, Counter
>>> registry = CollectorRegistry()
>>> Counter("doc_things", "Things", registry=registry).inc(2)
>>> state = {"ready": (False, "waiting for partitions")}
>>> server = HealthServer(registry, 0, lambda: state["ready"], addr="127.0.0.1")
>>> http_get(server.port, "/healthz")
(200, '{"status": "alive"}')
>>> http_get(server.port, "/readyz")
(503, '{"ready": false, "reason": "waiting for partitions"}')
>>> state["ready"] = (True, "4 partitions, model v120")
>>> http_get(server.port, "/readyz")
(200, '{"ready": true, "reason": "4 partitions, model v120"}')
>>> "doc_things_total 2.0" in http_get(server.port, "/metrics")[1]
True
>>> server.close()
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

# () -> (ready, reason); asked at every /readyz request, so it must be cheap and never block.
Readiness = Callable[[], tuple[bool, str]]
StartResponse = Callable[..., Any]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    # A slow scraper must not hold up a health check, nor a stopping process.
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes and health checks every few seconds would flood stderr."""


class HealthServer:
    """Serves ``registry`` and the health endpoints on ``port`` (0: a free one) in a thread."""

    def __init__(
        self, registry: Any, port: int, readiness: Readiness, addr: str = "0.0.0.0"
    ) -> None:
        from prometheus_client import make_wsgi_app

        self.readiness = readiness
        self._metrics = make_wsgi_app(registry)
        self._httpd = make_server(
            addr, port, self.app, server_class=_ThreadingServer, handler_class=_QuietHandler
        )
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name=f"http:{self.port}", daemon=True
        )
        self._thread.start()

    def app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI application: routes by path."""
        path = environ.get("PATH_INFO") or "/"
        if path == "/healthz":
            return _json(start_response, 200, {"status": "alive"})
        if path == "/readyz":
            try:
                ready, reason = self.readiness()
            except Exception as e:  # a broken check is a not-ready process, not a dead server
                ready, reason = False, f"readiness check failed: {type(e).__name__}: {e}"
            return _json(start_response, 200 if ready else 503, {"ready": ready, "reason": reason})
        if path in ("/", "/metrics"):
            return self._metrics(environ, start_response)  # type: ignore[no-any-return]
        return _json(start_response, 404, {"error": f"{path}: try /metrics, /healthz, /readyz"})

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _json(start_response: StartResponse, status: int, body: dict[str, Any]) -> list[bytes]:
    phrases = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}
    data = json.dumps(body).encode()
    start_response(
        f"{status} {phrases[status]}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
    )
    return [data]


def http_get(
    port: int, path: str, host: str = "127.0.0.1", timeout: float = 5.0
) -> tuple[int, str]:
    """``GET`` a path of a local server: (status, body), also for 4xx and 5xx answers."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode()
