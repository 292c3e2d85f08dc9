"""`riverline demo --reviewer simulated:...` / `--review-web PORT`: the loop with a reviewer
that is not a person, with people on the review page, or both.

The replay runs paced (``--speed`` event seconds a wall second) beside the consumer, so the
reviewer's answers, which go through the broker like a person's, come back while the stream
is still flowing; replayed all at once, every event would be predicted before the first answer.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import redis
import typer

from consumers.signals import StopFlag
from pipeline.cli.common import console, print_error
from pipeline.cli.review import TOKEN_ENV
from pipeline.config import RiverlineConfig
from producers.reviewer import ReviewerSpec, SimulatedAnswers, SimulatedReviewer, true_labels
from producers.schedule import LabelDelay
from producers.sources import SourceError, SourceOptions


@contextmanager
def review_page(cfg: RiverlineConfig, servers: str, port: int) -> Iterator[None]:
    """The review page on 127.0.0.1:``port`` for people, in a thread, for the block's length.

    Its URL and token go to stdout (the token is ``RIVERLINE_REVIEW_TOKEN`` if set, else a
    one-off one), so a person can open it while the demo runs.
    """
    import uvicorn

    from consumers.review import open_review_queue
    from consumers.review.web import create_app

    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            print_error(f"--review-web: port {port} is in use")
            raise typer.Exit(1)
    token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(18)
    with open_review_queue(cfg, servers) as queue:
        server = uvicorn.Server(
            uvicorn.Config(create_app(queue, token), host="127.0.0.1", port=port, log_level="error")
        )
        # In a thread uvicorn installs no signal handler: the demo's own stops everything.
        thread = threading.Thread(target=server.run, name="review-web", daemon=True)
        thread.start()
        while not server.started and thread.is_alive():
            time.sleep(0.05)
        print(f"review page: http://127.0.0.1:{port}/  token: {token}", flush=True)
        print("people answer there; Ctrl-C stops the demo and prints the summary", flush=True)
        try:
            yield
        finally:
            server.should_exit = True
            thread.join(timeout=10)


def run_review_demo(
    cfg: RiverlineConfig,
    servers: str,
    client: redis.Redis,
    stop: StopFlag,
    source: str,
    delay: LabelDelay | None,
    limit: int | None,
    spec: ReviewerSpec | None,
    speed: float,
    web_port: int | None = None,
) -> dict[str, Any]:
    """The paced replay and the consumer, with a simulated reviewer (``spec``), the review
    page for people (``web_port``: the consumer then runs until stopped), or both."""
    from consumers.run import Consumer
    from producers.replay import replay

    if cfg.review.policy == "none":
        console.print(
            "[yellow]note:[/yellow] review.policy is none: nobody is asked "
            "(try --config configs/review.yaml)",
            highlight=False,
        )
    reviewer = None
    if spec is not None:
        try:
            truth = true_labels(source, limit)
        except SourceError as e:
            print_error(e)
            raise typer.Exit(1) from None
        reviewer = SimulatedReviewer(cfg, servers, SimulatedAnswers(spec, truth)).start()
    failure: list[BaseException] = []

    # With people, event time starts now: the requests' deadlines and the time to answer are
    # then on the clock people see (a dataset's own times may be years old).
    options = SourceOptions(limit=limit)
    if web_port is not None:
        options = SourceOptions(limit=limit, start=time.time())

    def publish() -> None:
        try:
            replay(cfg, servers, source, delay, options=options, speed=speed)
        except BaseException as e:  # shown after the consumer stops
            failure.append(e)

    with ExitStack() as stack:
        if web_port is not None:
            stack.enter_context(review_page(cfg, servers, web_port))
        producer = threading.Thread(target=publish, name="replay", daemon=True)
        producer.start()
        who = "people on the review page answer"
        if reviewer is not None and spec is not None:
            simulated = (
                f"a simulated reviewer answers (accuracy {spec.accuracy:g}, "
                f"{spec.delay_seconds:g}s later)"
            )
            who = simulated if web_port is None else f"people on the review page and {simulated}"
        console.print(f"replaying at {speed:g}x while {who}; consuming...", highlight=False)
        # With people, the demo waits for them until stopped; a simulated reviewer is done
        # once the stream is.
        until_idle = None if web_port is not None else 3.0
        consumer = Consumer(cfg, servers, client, until_idle=until_idle, stop=stop)
        try:
            result = consumer.run()
        finally:
            if reviewer is not None:
                reviewer.stop()
            producer.join(timeout=5)
    if failure:
        print_error(f"replay failed: {failure[0]}")
        raise typer.Exit(1)
    if reviewer is not None:
        console.print(f"simulated reviewer: {reviewer.answered} answers published", highlight=False)
    return result
