"""A pipeline's topics on a cluster where nothing is created automatically.

Every topic of a pipeline (events, labels, predictions, dead letters, review requests) gets
``kafka.partitions`` partitions: events and labels must agree (an event and its label meet in
the same partition number), and predictions are published to their event's partition number.
A topic that exists already is left as it is; one whose partition count differs from the
config's is reported, since Kafka can only add partitions, which would move keys.

>>> from pipeline.config import load_config
>>> cfg = load_config(None, {"name": "fraud", "kafka": {"partitions": 4}}, environ={})
>>> wanted = pipeline_topics(cfg.kafka)
>>> wanted["fraud.events"], len(wanted)
(4, 5)
>>> outcomes = compare(wanted, {"fraud.events": 4, "fraud.labels": 2})
>>> [(o.topic, o.status) for o in outcomes][:3]
[('fraud.events', 'exists'), ('fraud.labels', 'mismatch'), ('fraud.predictions', 'missing')]
>>> print(outcomes[1].describe())
fraud.labels exists with 2 partitions; the config says 4 (kafka.partitions)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from pipeline.config import KafkaConfig
from pipeline.kafka.transport import make_transport

Status = Literal["missing", "created", "exists", "mismatch"]


@dataclass(frozen=True)
class TopicOutcome:
    topic: str
    wanted: int  # partitions the config asks for
    found: int | None  # partitions the cluster has; None if the topic does not exist
    status: Status

    def describe(self) -> str:
        if self.status == "mismatch":
            return (
                f"{self.topic} exists with {_partitions(self.found)}; the config says "
                f"{self.wanted} (kafka.partitions)"
            )
        return f"{self.topic}: {self.status} ({_partitions(self.found or self.wanted)})"


def _partitions(n: int | None) -> str:
    return "1 partition" if n == 1 else f"{n} partitions"


def pipeline_topics(kafka: KafkaConfig) -> dict[str, int]:
    """Topic name -> partitions, in the config's order (events first)."""
    return {name: kafka.partitions for name in kafka.topics.model_dump().values()}


def compare(wanted: dict[str, int], existing: dict[str, int | None]) -> list[TopicOutcome]:
    """What the cluster holds against what the config wants, topic by topic."""
    outcomes = []
    for topic, partitions in wanted.items():
        found = existing.get(topic)
        if found is None:
            status: Status = "missing"
        elif found == partitions:
            status = "exists"
        else:
            status = "mismatch"
        outcomes.append(TopicOutcome(topic, partitions, found, status))
    return outcomes


def create_pipeline_topics(
    kafka: KafkaConfig, bootstrap: str, timeout_s: float = 30.0
) -> list[TopicOutcome]:
    """Create the missing topics; report each topic's outcome (TransportError if unreachable)."""
    transport = make_transport(kafka, bootstrap)
    wanted = pipeline_topics(kafka)
    outcomes = compare(wanted, {name: transport.partition_count(name) for name in wanted})
    missing = [o.topic for o in outcomes if o.status == "missing"]
    if missing:
        # Creates only what is still missing (another process may have won the race) and
        # waits until every topic is in the broker's metadata.
        transport.ensure_topics(missing, timeout_s)
    return [
        _created(o, transport.partition_count(o.topic)) if o.topic in missing else o
        for o in outcomes
    ]


def _created(outcome: TopicOutcome, found: int | None) -> TopicOutcome:
    # Another process may have created it first, with other partitions.
    status: Status = "created" if found in (None, outcome.wanted) else "mismatch"
    return replace(outcome, status=status, found=found)
