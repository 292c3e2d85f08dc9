"""The reviewer's tools: a queue of review requests shared through Redis, a web page, a prompt."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from consumers.review.queue import DEFAULT_CLAIM_TTL_S, ReviewQueue
from consumers.review.transport import AnswerPublisher, RequestReader
from pipeline.config import RiverlineConfig
from pipeline.kafka.clients import ensure_topics
from pipeline.state.redis_client import connect


@contextmanager
def open_review_queue(
    cfg: RiverlineConfig,
    bootstrap: str,
    claim_ttl_s: float = DEFAULT_CLAIM_TTL_S,
    publish_timeout_s: float = 30.0,
    **producer_options: Any,
) -> Iterator[ReviewQueue]:
    """The pipeline's review queue, reading its requests until the block ends."""
    topics = cfg.kafka.topics
    ensure_topics(cfg.kafka, bootstrap, [topics.review_requests, topics.labels])
    reader = RequestReader(cfg.kafka, bootstrap, topics.review_requests).start()
    publisher = AnswerPublisher(
        cfg.kafka, bootstrap, topics.labels, publish_timeout_s, **producer_options
    )
    client = connect(cfg.redis.url)
    try:
        yield ReviewQueue(
            reader,
            publisher,
            client,
            cfg.name,
            claim_ttl_s=claim_ttl_s,
            validation=cfg.validation,
            new_classes=cfg.review.new_classes,
        )
    finally:
        reader.close()
        publisher.close()
        client.close()


__all__ = ["ReviewQueue", "open_review_queue"]
