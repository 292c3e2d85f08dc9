"""`riverline demo --reviewer simulated:...`: the loop with a reviewer that is not a person.

The replay runs paced (``--speed`` event seconds a wall second) beside the consumer, so the
reviewer's answers, which go through the broker like a person's, come back while the stream
is still flowing; replayed all at once, every event would be predicted before the first answer.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
import typer

from consumers.signals import StopFlag
from pipeline.cli.common import console, print_error
from pipeline.config import RiverlineConfig
from producers.reviewer import ReviewerSpec, SimulatedAnswers, SimulatedReviewer, true_labels
from producers.schedule import LabelDelay
from producers.sources import SourceError, SourceOptions


def run_review_demo(
    cfg: RiverlineConfig,
    servers: str,
    client: redis.Redis,
    stop: StopFlag,
    source: str,
    delay: LabelDelay | None,
    limit: int | None,
    spec: ReviewerSpec,
    speed: float,
) -> dict[str, Any]:
    from consumers.run import Consumer
    from producers.replay import replay

    if cfg.review.policy == "none":
        console.print(
            "[yellow]note:[/yellow] review.policy is none: nobody is asked "
            "(try --config configs/review.yaml)",
            highlight=False,
        )
    try:
        truth = true_labels(source, limit)
    except SourceError as e:
        print_error(e)
        raise typer.Exit(1) from None
    reviewer = SimulatedReviewer(cfg, servers, SimulatedAnswers(spec, truth)).start()
    failure: list[BaseException] = []

    def publish() -> None:
        try:
            replay(cfg, servers, source, delay, options=SourceOptions(limit=limit), speed=speed)
        except BaseException as e:  # shown after the consumer stops
            failure.append(e)

    producer = threading.Thread(target=publish, name="replay", daemon=True)
    producer.start()
    console.print(
        f"replaying at {speed:g}x while a simulated reviewer answers "
        f"(accuracy {spec.accuracy:g}, {spec.delay_seconds:g}s later); consuming...",
        highlight=False,
    )
    consumer = Consumer(cfg, servers, client, until_idle=3.0, stop=stop)
    try:
        result = consumer.run()
    finally:
        reviewer.stop()
        producer.join(timeout=5)
    if failure:
        print_error(f"replay failed: {failure[0]}")
        raise typer.Exit(1)
    console.print(f"simulated reviewer: {reviewer.answered} answers published", highlight=False)
    return result
