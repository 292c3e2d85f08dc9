"""What the review tests share: requests published by hand, the web app served in a thread,
and plain HTTP calls that report 4xx answers and redirects instead of raising or following.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from kafka import KafkaProducer

from consumers.review import open_review_queue
from consumers.review.queue import ReviewQueue
from consumers.review.web import create_app
from pipeline.config import RiverlineConfig
from pipeline.kafka.clients import ensure_topics
from pipeline.kafka.embedded import free_port
from pipeline.schemas import (
    LabelValue,
    ModelOpinion,
    Neighbour,
    ReviewRequest,
    RulesOpinion,
    encode,
)
from tests.integration.helpers import read_topic, wait_for

TOKEN = "review-test-token-0123456789"


def make_request(
    cfg: RiverlineConfig,
    request_id: str,
    classes: list[LabelValue] | None = None,
    deadline: float | None = None,
    task: str = "classification",
    key: str | None = None,
    requested_at: float | None = None,
) -> ReviewRequest:
    classes = [False, True] if classes is None and task == "classification" else classes or []
    now = time.time()
    return ReviewRequest(
        id=request_id,
        pipeline=cfg.name,
        ts=1_700_000_000.0 + len(request_id),
        features={"url_length": 0.31, "has_ip": True, "domain": "paypa1.example", "age": None},
        attributes={"country": "FR"},
        key=key,
        task=task,  # type: ignore[arg-type]
        classes=classes,
        model=ModelOpinion(
            prediction=classes[0] if classes else 3.2,
            proba={"false": 0.58, "true": 0.42} if classes else None,
            confidence=0.58 if classes else None,
            model_version=41,
            explanation=[
                {"feature": "has_ip", "value": True, "contribution": 0.21},
                {"feature": "url_length", "value": 0.31, "contribution": -0.08},
                {"method": "tree", "target": "false", "base": 0.45, "prediction": 0.58},
            ],
        ),
        rules=RulesOpinion(
            prediction=classes[-1] if classes else 2.5,
            source="heuristic",
            confidence=0.7,
            rule="has_ip == true",
        ),
        neighbours=[
            Neighbour(
                id="n7",
                label=classes[0] if classes else 3.0,
                distance=0.125,
                differs={"domain": "paypal.example"},
            )
        ],
        mode="label",
        requested_at=now if requested_at is None else requested_at,
        deadline=deadline,
    )


def publish_requests(cfg: RiverlineConfig, requests: list[ReviewRequest]) -> dict[str, int]:
    """Publish the requests keyed like their events; returns each one's partition."""
    assert cfg.kafka.bootstrap is not None
    topics = cfg.kafka.topics
    ensure_topics(cfg.kafka, cfg.kafka.bootstrap, [topics.review_requests, topics.labels])
    producer = KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap, acks="all")
    try:
        partitions = {}
        for request in requests:
            key = (request.key or request.id).encode()
            meta = producer.send(topics.review_requests, key=key, value=encode(request)).get(30)
            partitions[request.id] = meta.partition
        return partitions
    finally:
        producer.close()


def human_labels(cfg: RiverlineConfig, expected: int, timeout: float = 20.0) -> list[Any]:
    """The labels topic's records once at least ``expected`` are there."""
    assert cfg.kafka.bootstrap is not None
    found: list[Any] = []

    def enough() -> bool:
        found[:] = read_topic(cfg.kafka.bootstrap or "", cfg.kafka.topics.labels, timeout_s=1.0)
        return len(found) >= expected

    wait_for(enough, timeout, f"{expected} labels on {cfg.kafka.topics.labels}")
    return found


@dataclass
class Served:
    """Where a review app answers (and its queue, when it runs in this process)."""

    url: str
    queue: ReviewQueue | None = None


@contextmanager
def served_app(
    cfg: RiverlineConfig, token: str | None = TOKEN, claim_ttl_s: float = 600.0
) -> Iterator[Served]:
    """The review app on a free loopback port, served by uvicorn in a thread."""
    assert cfg.kafka.bootstrap is not None
    with ExitStack() as stack:
        queue = stack.enter_context(
            open_review_queue(cfg, cfg.kafka.bootstrap, claim_ttl_s=claim_ttl_s)
        )
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(queue, token), host="127.0.0.1", port=port, log_level="error")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_for(lambda: server.started, 10.0, "the review app to start")
        try:
            yield Served(f"http://127.0.0.1:{port}", queue)
        finally:
            server.should_exit = True
            thread.join(timeout=10)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Reply:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _opener.open(request, timeout=30) as response:
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.headers, e.read())


def api(
    served: Served,
    method: str,
    path: str,
    payload: Any = None,
    reviewer: str = "script",
    token: str | None = TOKEN,
) -> Reply:
    headers = {"X-Reviewer": reviewer}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = None
    if payload is not None:
        headers["Content-Type"] = "application/json"
        body = json.dumps(payload).encode()
    return call(method, served.url + path, headers, body)


def page_once_it_shows(served: Served, cookie: str, marker: str, what: str) -> str:
    """The review page as a person sees it after reloading until it shows ``marker``: the app
    reads the requests topic in the background, so the first load may come before it has."""
    page = ""

    def shows() -> bool:
        nonlocal page
        page = call("GET", served.url + "/", {"Cookie": cookie}).body.decode()
        return marker in page

    wait_for(shows, 15.0, f"the page to show {what}")
    return page


def port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def next_request(served: Served, reviewer: str, timeout: float = 15.0) -> dict[str, Any] | None:
    """The next request for this reviewer once the app has read the whole topic."""
    deadline = time.monotonic() + timeout
    while True:
        reply = api(served, "GET", "/api/next", reviewer=reviewer)
        assert reply.status == 200, reply.body
        data = reply.json()
        if data["request"] is not None or data["caught_up"] or time.monotonic() > deadline:
            return data["request"]  # type: ignore[no-any-return]
        time.sleep(0.1)
