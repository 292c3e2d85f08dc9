"""The pipeline's configuration: YAML file, then environment, then command-line flags.

Precedence, lowest first: field defaults, the YAML file, environment variables
(``RIVERLINE_<SECTION>__<FIELD>``, plus the short aliases ``RIVERLINE_KAFKA_BOOTSTRAP`` and
``RIVERLINE_REDIS_URL``), then explicit overrides (the CLI flags).

>>> cfg = load_config(None, {"name": "doc-example", "gating": {"min_labels": 5}})
>>> cfg.name, cfg.gating.min_labels, cfg.kafka.topics.events
('doc-example', 5, 'doc-example.events')

Topic names not set explicitly derive from the pipeline's name, so two pipelines never share
a topic by accident; an explicit name wins:

>>> topics = load_config(None, {"name": "a", "kafka": {"topics": {"events": "x"}}}).kafka.topics
>>> topics.events, topics.labels, topics.dead_letters
('x', 'a.labels', 'a.dead-letters')

A bad value stops with a message that names the field:

>>> try:
...     load_config(None, {"gating": {"window": 0}})
... except ConfigError as e:
...     print(e)
invalid configuration:
  gating.window: Input should be greater than or equal to 1
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.models import (
    DEFAULT_MODEL_SPEC,
    SpecError,
    make_drift_detector,
    make_metric,
    parse_model_spec,
)

Scalar = bool | int | float | str | None

ENV_PREFIX = "RIVERLINE_"
# Short, documented aliases for the two settings people change per machine.
ENV_ALIASES = {
    "RIVERLINE_KAFKA_BOOTSTRAP": ("kafka", "bootstrap"),
    "RIVERLINE_REDIS_URL": ("redis", "url"),
    "RIVERLINE_CHECKPOINT_SECRET": ("checkpoint", "secret"),
}


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names every bad field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Topic field -> the suffix of its default name, ``{pipeline name}.{suffix}``.
TOPIC_SUFFIXES = {
    "events": "events",
    "labels": "labels",
    "predictions": "predictions",
    "dead_letters": "dead-letters",
    "review_requests": "review-requests",
}


def default_topics(name: str) -> dict[str, str]:
    """The topic names of pipeline ``name`` when the config does not set them.

    >>> default_topics("fraud")["dead_letters"]
    'fraud.dead-letters'
    """
    return {field: f"{name}.{suffix}" for field, suffix in TOPIC_SUFFIXES.items()}


class Topics(_Section):
    """Topic names; empty (the default) means ``{name}.events`` etc., filled in on loading."""

    events: str = Field(default="", description="Events to predict; unset: `{name}.events`.")
    labels: str = Field(
        default="", description="Labels (ground truth, people's answers); unset: `{name}.labels`."
    )
    predictions: str = Field(
        default="", description="Served predictions; unset: `{name}.predictions`."
    )
    dead_letters: str = Field(
        default="", description="Refused records with their reason; unset: `{name}.dead-letters`."
    )
    review_requests: str = Field(
        default="", description="Events sent to people; unset: `{name}.review-requests`."
    )


class KafkaConfig(_Section):
    """The Kafka cluster, the pipeline's topics and the clients' settings."""

    bootstrap: str | None = Field(
        default=None, description="host:port[,host:port]; unset means the embedded broker."
    )
    topics: Topics = Field(
        default=Topics(), description="Topic names; unset ones derive from the pipeline's name."
    )
    partitions: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="Partitions of the topics riverline creates (events and labels must match: "
        "co-partitioning).",
    )
    replication_factor: int = Field(
        default=1, ge=1, description="Replicas of the topics riverline creates."
    )
    session_timeout_ms: int = Field(
        default=6000, ge=1000, description="Consumer group session timeout (fast joins)."
    )
    heartbeat_interval_ms: int = Field(
        default=1000, ge=100, description="Consumer group heartbeat interval."
    )
    max_poll_interval_ms: int = Field(
        default=60000,
        ge=1000,
        description="Longest time between polls before the group counts a consumer as gone.",
    )
    join_timeout_seconds: float = Field(
        default=150.0,
        ge=0,
        description="How long a role waits for the consumer group to assign it partitions (an "
        "empty assignment counts) before it stops with an error instead of hanging: a broker "
        "can leave a group stuck in a rebalance (the embedded one does when a member leaves "
        "mid-rebalance). Keep it above max_poll_interval_ms, the longest a join may "
        "legitimately wait for the other members; 0 waits for ever.",
    )
    max_poll_records: int = Field(default=500, ge=1, description="Records per fetch, at most.")
    max_partition_fetch_bytes: int = Field(
        default=1048576, ge=1, description="Bytes per partition and fetch, at most."
    )
    reset_policy: Literal["earliest", "latest"] = Field(
        default="earliest", description="Where a partition with no checkpointed offset starts."
    )
    client: Literal["auto", "kafka-python", "confluent"] = Field(
        default="auto",
        description="Kafka client library: confluent (librdkafka, riverline[fast]), "
        "kafka-python, or auto (confluent-kafka when installed).",
    )
    fetch_max_wait_ms: int | None = Field(
        default=None,
        ge=0,
        description="Longest a fetch waits at the broker for data: bounds serving latency on an "
        "idle stream (some brokers, Tansu among them, hold every fetch this long). Unset: 5 with "
        "confluent-kafka, 10 with kafka-python (whose fetch loop costs more CPU per fetch).",
    )
    linger_ms: int = Field(
        default=1, ge=0, description="How long a producer waits to batch outputs before sending."
    )
    batch_bytes: int = Field(
        default=512 * 1024,
        ge=1024,
        description="Largest record batch a producer makes, in bytes: keep it below the brokers' "
        "max.message.bytes (1 MB by default), or they refuse the batch.",
    )
    max_message_bytes: int = Field(
        default=1_000_000,
        ge=16_384,
        description="Largest record riverline publishes (key, value and headers), and the "
        "producers' own limit; keep it at or below the brokers' max.message.bytes (1 MB by "
        "default). A larger dead letter keeps its value truncated, with its length and sha256; "
        "a larger prediction or review request is dead-lettered (output_too_large).",
    )
    client_options: dict[str, Any] = Field(
        default_factory=dict,
        json_schema_extra={"default": {}},  # a factory's value is not in the schema otherwise
        description="Passed to every client: security_protocol, sasl_*, ssl_* (kafka-python "
        "names, translated for confluent-kafka; dotted librdkafka names go to it as they are).",
    )

    def fetch_wait_ms(self, client_default: int) -> int:
        """``fetch_max_wait_ms``, or the client's own default when unset.

        >>> KafkaConfig().fetch_wait_ms(5), KafkaConfig(fetch_max_wait_ms=0).fetch_wait_ms(5)
        (5, 0)
        """
        return client_default if self.fetch_max_wait_ms is None else self.fetch_max_wait_ms


class RedisConfig(_Section):
    """Where checkpoints, model versions, the lease and the status live."""

    url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="redis://, rediss:// (TLS) or unix:// URL; env RIVERLINE_REDIS_URL.",
    )
    wait_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How long `run` waits for a Redis that does not answer before it stops.",
    )

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, v: str) -> str:
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v


class ChallengerSpec(_Section):
    """A model that learns beside the champion, scored but never served (pipeline/challengers)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="Its name.")
    spec: str = Field(description="A River model spec, as model.spec.")

    @field_validator("spec")
    @classmethod
    def _buildable(cls, v: str) -> str:
        try:
            parse_model_spec(v)
        except SpecError as e:
            raise ValueError(str(e)) from None
        return v


class ModelConfig(_Section):
    """The River model, untrained at start."""

    spec: str = Field(
        default=DEFAULT_MODEL_SPEC,
        description="A River model spec (`module.Class`, pipeline steps joined by a pipe); the "
        "default: numbers (and booleans) scaled, strings one-hot, logistic regression.",
    )
    rollback_every: int | None = Field(
        default=1000,
        ge=1,
        description="A model whose learned numbers turn NaN or infinite after a label is rolled "
        "back to a copy taken every this many labels, plus the labels since (kept in memory), "
        "and the event is dead-lettered (model_non_finite). Fewer: more copies, less kept. "
        "null: no check after learn_one (saves ~2-3 us a label on a linear pipeline).",
    )
    challengers: tuple[ChallengerSpec, ...] = Field(
        default=(),
        description="Models that learn on every label beside the champion and are scored on "
        "them, never served until promoted (challengers.promote).",
    )

    @field_validator("challengers")
    @classmethod
    def _distinct(cls, v: tuple[ChallengerSpec, ...]) -> tuple[ChallengerSpec, ...]:
        names = [c.name for c in v]
        if len(set(names)) != len(names) or "model" in names:
            # "model" names the model of model.spec, champion or not.
            raise ValueError("challenger names must be distinct, and none may be 'model'")
        return v

    @field_validator("spec")
    @classmethod
    def _buildable(cls, v: str) -> str:
        try:
            parse_model_spec(v)
        except SpecError as e:
            raise ValueError(str(e)) from None
        return v


class EvaluationConfig(_Section):
    """How the model, the fallback and what was served are scored (prequentially)."""

    metric: str = Field(default="Accuracy", description="Gates promotion; a River metric name.")
    extra_metrics: tuple[str, ...] = Field(
        default=(), description="More River metric names, reported but not gating."
    )
    slice_by: str | None = Field(
        default=None, description="An event attribute: metrics per value (fairness slices)."
    )
    max_slices: int = Field(
        default=100, ge=1, description="Distinct slice values kept; later ones share '(other)'."
    )
    history_every: int = Field(default=10, ge=1, description="Labels between curve samples.")
    history_max: int = Field(
        default=2000, ge=10, description="Curve samples kept; beyond, the curve is thinned."
    )

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        try:
            make_metric(v)
        except SpecError as e:
            raise ValueError(str(e)) from None
        return v

    @field_validator("extra_metrics")
    @classmethod
    def _extra(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            try:
                make_metric(name)
            except SpecError as e:
                raise ValueError(str(e)) from None
        return v


Operator = Literal["==", "!=", "<", "<=", ">", ">=", "in", "not in", "is null", "is not null"]


class Rule(_Section):
    """One heuristic rule: if the feature compares to the value, serve the prediction."""

    feature: str = Field(description="The feature the rule looks at.")
    op: Operator = Field(description="How the feature compares to `value`.")
    value: Scalar | list[Scalar] = Field(
        default=None, description="What the feature is compared to (a list for in, not in)."
    )
    prediction: Scalar = Field(description="Served when the rule matches.")
    confidence: float = Field(
        default=1.0, ge=0.0, le=1.0, description="The confidence served with the prediction."
    )


class FallbackConfig(_Section):
    """What serves while the model has not earned trust: rules, a callable, a default."""

    rules: tuple[Rule, ...] = Field(default=(), description="Heuristic rules; first match wins.")
    callable: str | None = Field(
        default=None, description="module:function(features) -> prediction or None"
    )
    default: Scalar = Field(default=None, description="Served when nothing else answers.")

    @field_validator("callable")
    @classmethod
    def _callable_form(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[\w.]+:\w+", v):
            raise ValueError("must look like 'package.module:function'")
        return v


class DriftConfig(_Section):
    """Drift detection on the model's errors."""

    detector: str | None = Field(
        default="drift.ADWIN",
        description="A River drift detector on the model's errors; null: off.",
    )
    demote: bool = Field(default=True, description="A detection sends the model back to shadow.")

    @field_validator("detector")
    @classmethod
    def _detector(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                make_drift_detector(v)
            except SpecError as e:
                raise ValueError(str(e)) from None
        return v


class ExplainConfig(_Section):
    """Per-prediction explanations."""

    enabled: bool = Field(
        default=False,
        description="Top feature contributions on each prediction the model serves (linear: "
        "weights; trees: the path; forests: the members'; others: sampled Shapley values).",
    )
    top_k: int = Field(default=3, ge=1, description="Feature contributions per prediction.")
    every: int = Field(
        default=1, ge=1, description="Explain one model-served prediction in this many (1: all)."
    )
    samples: int = Field(
        default=128,
        ge=1,
        le=100_000,
        description="Model calls per sampled explanation (models that are neither linear, "
        "trees nor forests of trees): the fixed cost of each.",
    )
    background: int = Field(
        default=32,
        ge=1,
        le=10_000,
        description="Recent events kept as the background sampled explanations compare with.",
    )
    seed: int = Field(
        default=0, description="Seed of the sampled explanations (with each event's id)."
    )
    importance: bool = Field(
        default=False,
        description="Global feature importance as the model learns (incremental permutation "
        "importance over the last `background` events): report, status, metrics.",
    )
    importance_every: int = Field(
        default=1,
        ge=1,
        description="Update the importance on one label in this many (each update costs one "
        "model call per feature, plus one).",
    )
    importance_alpha: float = Field(
        default=0.01,
        gt=0.0,
        le=1.0,
        description="Smoothing of the importance: the weight of each new label's measure.",
    )


class TelemetryConfig(_Section):
    """Prometheus metrics and the status that `riverline status` reads."""

    prometheus_port: int | None = Field(
        default=None, ge=0, le=65535, description="Serve /metrics here (0: any free port)."
    )
    status_every_seconds: float = Field(
        default=2.0, gt=0, description="How often the status hash in Redis is refreshed."
    )


class ChallengersConfig(_Section):
    promote: Literal["manual", "auto"] = Field(
        default="manual",
        description="auto: a challenger scored on gating.min_labels labels that beats the "
        "champion over gating.window by more than gating.margin takes over; manual: never "
        "by itself.",
    )


class GatingConfig(_Section):
    """When the model is promoted to serve, and when it is sent back to shadow."""

    min_labels: int = Field(default=100, ge=0, description="Labels learned before promotion.")
    window: int = Field(
        default=200, ge=1, description="Labelled events the model and the fallback are compared on."
    )
    margin: float = Field(
        default=0.0,
        ge=0.0,
        description="Promote when better than the fallback by more than this; demote when worse "
        "by more.",
    )
    confidence_threshold: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="A serving model serves the predictions at least this confident; the "
        "fallback serves the rest.",
    )


class ValidationConfig(_Section):
    """Limits on incoming records; a record outside them is dead-lettered with its reason."""

    max_record_bytes: int = Field(default=65_536, ge=64, description="Larger records are refused.")
    max_features: int = Field(
        default=1_000, ge=1, description="Events with more features are refused."
    )
    max_string_length: int = Field(default=1_024, ge=1, description="Longest string feature value.")
    max_future_seconds: float | None = Field(
        default=7 * 86_400,
        gt=0,
        description="Event times further ahead of the wall clock are refused.",
    )
    min_ts: float | None = Field(default=None, description="Event times before this are refused.")
    labels: tuple[bool | int | float | str, ...] | None = Field(
        default=None, description="The allowed classes; unset allows any."
    )
    max_abs_value: float | None = Field(
        default=1e12,
        gt=0,
        description="A number feature (or a regressor's label) larger in magnitude is refused "
        "(value_out_of_range). 1e12 is River's own default gradient clip for its linear models, "
        "far above any count, price or epoch-seconds time, and far below where a model's sums "
        "of squares overflow (1e308): a value beyond it is a unit error or an attack, and one "
        "such value wrecks a linear model's weights for good. Epoch milliseconds (~1.7e12) "
        "exceed it: send seconds or raise it; null: no limit.",
    )


class JoinConfig(_Section):
    """The buffer of events waiting for their labels."""

    ttl_events: int | None = Field(
        default=100_000, ge=1, description="An unlabelled event expires after this many events."
    )
    ttl_seconds: float | None = Field(
        default=None, gt=0, description="An unlabelled event expires after this much event time."
    )
    max_pending: int = Field(
        default=100_000,
        ge=1,
        description="Events waiting for labels; when full, the oldest is evicted (dead-lettered), "
        "unless its ttl_events ends with this event: then it expires (counted, not dead-lettered).",
    )
    seen_ids: int = Field(
        default=1_000_000,
        ge=0,
        description="Event ids remembered beyond the TTL to catch duplicates (two Bloom "
        "filters: the last seen_ids to 2 x seen_ids ids are always found); 0: only within the "
        "TTL.",
    )
    seen_ids_error_rate: float = Field(
        default=1e-6,
        gt=0,
        lt=1,
        description="Chance that a new event id is taken for one seen (dead-lettered as "
        "duplicate_event): a full filter's; memory ~40 bits per id per filter at 1e-6.",
    )
    max_pending_bytes: int | None = Field(
        default=128 * 1024 * 1024,
        ge=1,
        description="Bytes of the records of events waiting for labels (and, apart, of labels "
        "waiting for events); beyond it the oldest is evicted as when max_pending is reached. "
        "Bounds the checkpoint (one Redis value, checkpoint.max_bytes) and memory (a record's "
        "parsed features take a few times its bytes in memory).",
    )


class CheckpointConfig(_Section):
    """Checkpoints of the learning state in Redis, their signing, and the writer's lease."""

    # Time first: a background checkpoint costs the event path a fork (a few ms), so a few
    # seconds apart it costs well under 1% at any rate; a label count would make it cost more
    # the faster the stream (benchmarks/checkpoint_cadence.py).
    every_labels: int = Field(
        default=50_000, ge=1, description="Checkpoint after this many labels learned..."
    )
    every_seconds: float = Field(
        default=5.0, gt=0, description="...or after this long, if anything was processed since."
    )
    keep: int = Field(default=5, ge=1, description="Checkpoint versions kept in Redis.")
    secret: SecretStr | None = Field(
        default=None, description="HMAC key for checkpoints; prefer RIVERLINE_CHECKPOINT_SECRET."
    )
    insecure: bool = Field(
        default=False, description="Allow unsigned checkpoints (only where Redis is trusted)."
    )
    lease_ttl_ms: int = Field(
        default=10_000, ge=500, description="A dead writer's lease expires after this long."
    )
    max_unflushed_labels: int = Field(
        default=10_000,
        ge=1,
        description="While Redis is down, consume at most this many labels past the last "
        "checkpoint, then pause (nothing is dropped).",
    )
    max_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1,
        description="Largest checkpoint written (compressed): one Redis value, and Redis refuses "
        "a value over its proto-max-bulk-len (512 MiB by default). A larger one stops the writer "
        "with an error naming the settings that bound it (join.max_pending_bytes, ...).",
    )
    background: bool = Field(
        default=True,
        description="Write checkpoints from a forked child (POSIX), as Redis's BGSAVE: serving "
        "pauses for the fork, not for the outputs' acknowledgement, the pickle or the Redis "
        "write (the child writes once the outputs before its snapshot are acknowledged). The "
        "final checkpoint on stop and --reset stay synchronous.",
    )

    def secret_bytes(self) -> bytes | None:
        return self.secret.get_secret_value().encode() if self.secret else None


class ServingConfig(_Section):
    """Model versions: how often the learner publishes one, how many are kept, how often
    predictors look for a new one (besides the pub/sub announcement)."""

    every_labels: int = Field(
        default=500, ge=1, description="Publish a model version after this many labels learned."
    )
    every_seconds: float = Field(
        default=10.0, gt=0, description="...or after this long, if the model learned since."
    )
    keep: int = Field(default=10, ge=1, description="Model versions kept in Redis.")
    poll_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often a predictor reads model:latest (pub/sub drops messages while a "
        "subscriber is disconnected).",
    )
    commit_every_seconds: float = Field(
        default=1.0,
        gt=0,
        description="How often a predictor commits its offsets, once its outputs are "
        "acknowledged: what a crash makes it publish again.",
    )


class OrderingConfig(_Section):
    """The event-time merge of the events and labels partitions."""

    max_idle_ms: int = Field(
        default=0,
        ge=0,
        description="How long a caught-up, empty partition is waited for (Kafka Streams' "
        "max.task.idle.ms); a partition known to hold records is always waited for.",
    )
    serve: Literal["ordered", "immediate"] = Field(
        default="ordered",
        description="ordered: an event is predicted and served when the merge releases it, in "
        "event-time order with the labels (a replay or a crash redo publishes the same bytes). "
        "immediate (run only): served as soon as it is fetched, with the model as it is then, "
        "without waiting for the merge (a fetch round on the labels partition when labels are "
        "in flight); learning, metrics and checkpoints stay in event-time order and exact, but "
        "a served prediction may have seen fewer labels and a redo may publish other bytes. "
        "Not with review or explain.",
    )


class ReviewConfig(_Section):
    """Humans in the loop: which events go to people, how many, and what is served meanwhile."""

    policy: Literal["none", "unserved", "uncertain", "entropy"] = Field(
        default="none",
        description="none; unserved: every event the model does not serve; uncertain: no model "
        "opinion or confidence below confidence_below; entropy: River's EntropySampler decides.",
    )
    confidence_below: float = Field(
        default=0.75,
        ge=0.0,
        le=1.0,
        description="uncertain: events whose model confidence is below this go to people.",
    )
    discount_factor: float = Field(
        default=3.0,
        gt=0.0,
        description="EntropySampler's: higher asks for fewer labels (where target_share is "
        "set, the factor it starts from).",
    )
    target_share: float | None = Field(
        default=0.35,
        gt=0.0,
        le=1.0,
        description="entropy: the share of the events the model has an opinion on that the "
        "sampler asks about, steered by adapting discount_factor as the stream goes; null: a "
        "fixed discount_factor.",
    )
    seed: int = Field(default=42, description="EntropySampler's seed: a replay asks the same.")
    budget_per_minute: float | None = Field(
        default=None,
        gt=0.0,
        description="Requests per minute of event time (a token bucket); null: no limit.",
    )
    max_pending: int = Field(
        default=10_000, ge=1, description="Requests awaiting an answer; beyond, none is sent."
    )
    mode: Literal["label", "defer"] = Field(
        default="label",
        description="label: serve the automatic answer now; defer: hold it until a person "
        "answers or the deadline passes.",
    )
    deadline_seconds: float | None = Field(
        default=3600.0,
        gt=0.0,
        description="Event time a request waits for its answer; null: no deadline (label mode).",
    )
    new_classes: bool = Field(
        default=False,
        description="A reviewer may answer with a class not offered (validation.labels still "
        "applies); false: only the offered classes.",
    )
    neighbours: int = Field(
        default=3,
        ge=0,
        le=20,
        description="A request carries this many of the most similar recently labelled events "
        "(their labels, distance and the features where they differ most); 0: none.",
    )
    neighbours_kept: int = Field(
        # Each request compares with every kept event: its cost grows with this (and with the
        # number of features), paid on the event path of each event sent for review.
        default=50,
        ge=1,
        le=10_000,
        description="How many recent labelled events (features and label) the neighbours are "
        "found among (checkpointed with the state; each request compares with all of them).",
    )

    @model_validator(mode="after")
    def _defer_needs_deadline(self) -> ReviewConfig:
        if self.mode == "defer" and self.deadline_seconds is None:
            raise ValueError("mode defer needs deadline_seconds: a held event must be served")
        return self


class RiverlineConfig(_Section):
    """Everything one pipeline needs; see configs/demo.yaml for a commented example."""

    name: str = Field(
        default="riverline",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
        description="Pipeline name: prefixes Redis keys and the default topic names, names the "
        "consumer group.",
    )
    kafka: KafkaConfig = Field(default=KafkaConfig(), description="Kafka: cluster, topics.")
    redis: RedisConfig = Field(default=RedisConfig(), description="Redis: state and models.")
    model: ModelConfig = Field(default=ModelConfig(), description="The River model.")
    challengers: ChallengersConfig = Field(
        default=ChallengersConfig(), description="How a challenger takes over."
    )
    evaluation: EvaluationConfig = Field(
        default=EvaluationConfig(), description="Metrics, slices, the learning curve."
    )
    fallback: FallbackConfig = Field(
        default=FallbackConfig(), description="What serves before the model."
    )
    gating: GatingConfig = Field(default=GatingConfig(), description="Promotion and demotion.")
    drift: DriftConfig = Field(default=DriftConfig(), description="Drift detection.")
    explain: ExplainConfig = Field(default=ExplainConfig(), description="Explanations.")
    telemetry: TelemetryConfig = Field(
        default=TelemetryConfig(), description="Prometheus metrics and status."
    )
    join: JoinConfig = Field(default=JoinConfig(), description="Events waiting for labels.")
    validation: ValidationConfig = Field(
        default=ValidationConfig(), description="Limits on incoming records."
    )
    checkpoint: CheckpointConfig = Field(
        default=CheckpointConfig(), description="Checkpoints and the writer's lease."
    )
    serving: ServingConfig = Field(
        default=ServingConfig(), description="Model versions for predictors."
    )
    ordering: OrderingConfig = Field(
        default=OrderingConfig(), description="The event-time merge of events and labels."
    )
    review: ReviewConfig = Field(default=ReviewConfig(), description="Humans in the loop.")

    @model_validator(mode="after")
    def _immediate_serves_alone(self) -> RiverlineConfig:
        if self.ordering.serve == "immediate" and (
            self.review.policy != "none" or self.explain.enabled
        ):
            raise ValueError(
                "ordering.serve immediate serves at fetch, outside the ordered path that review "
                "and explain work on: use ordering.serve ordered with them"
            )
        return self

    @model_validator(mode="after")
    def _topics_from_name(self) -> RiverlineConfig:
        topics = self.kafka.topics
        unset = {f: t for f, t in default_topics(self.name).items() if not getattr(topics, f)}
        if unset:
            kafka = self.kafka.model_copy(update={"topics": topics.model_copy(update=unset)})
            object.__setattr__(self, "kafka", kafka)  # frozen: filled in once, while validating
        return self


def config_schema() -> dict[str, Any]:
    """The JSON Schema of the config file, for editors (YAML language server) and checks.

    Sections forbid unknown fields (``additionalProperties: false``), so an editor flags a
    misspelt field as ``load_config`` would.

    >>> schema = config_schema()
    >>> schema["properties"]["gating"]["$ref"], schema["additionalProperties"]
    ('#/$defs/GatingConfig', False)
    """
    schema = RiverlineConfig.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _env_values(environ: dict[str, str]) -> dict[str, Any]:
    """``RIVERLINE_GATING__MIN_LABELS=5`` -> ``{"gating": {"min_labels": "5"}}``."""
    values: dict[str, Any] = {}
    for var, value in environ.items():
        if var in ENV_ALIASES:
            path: tuple[str, ...] = ENV_ALIASES[var]
        elif var.startswith(ENV_PREFIX) and not var.startswith(("RIVERLINE_TEST_",)):
            path = tuple(var[len(ENV_PREFIX) :].lower().split("__"))
            if path[0] not in RiverlineConfig.model_fields:
                continue  # other RIVERLINE_* variables (e.g. secrets) are not config fields
        else:
            continue
        node = values
        for part in path[:-1]:
            node = node.setdefault(part, {})
        # Secrets, URLs and addresses stay strings even when they look like numbers.
        raw = var in ENV_ALIASES or path[-1] == "secret"
        node[path[-1]] = value if raw else _parse_env_value(value)
    return values


def _parse_env_value(value: str) -> Any:
    # YAML gives env values the same types the file would: numbers, booleans, lists.
    try:
        return yaml.safe_load(value) if value.strip() else value
    except yaml.YAMLError:
        return value


def _format_errors(error: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            # pydantic only says "Extra inputs are not permitted": name the field meant.
            message = unknown_field_message(tuple(item["loc"]))
        else:
            message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def section_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model whose fields are valid at ``loc`` (list indices skipped); None if none is.

    >>> section_at(("fallback", "rules", 0)).__name__, section_at(()).__name__
    ('Rule', 'RiverlineConfig')
    >>> print(section_at(("gating", "window")))
    None
    """
    model: type[BaseModel] = RiverlineConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        found = _model_in(field.annotation) if field is not None else None
        if found is None:
            return None
        model = found
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    # A section (KafkaConfig), or the model inside a container or union (tuple[Rule, ...]).
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if found := _model_in(arg):
            return found
    return None


def unknown_field_message(loc: tuple[str | int, ...]) -> str:
    """What to say about the unknown field at ``loc``: the closest valid name at its level.

    >>> unknown_field_message(("gating", "min_label"))
    'unknown field, did you mean `min_labels`?'
    >>> unknown_field_message(("drift", "zzz"))
    'unknown field; fields here: `demote`, `detector`'
    """
    section = section_at(loc[:-1])
    if section is None:
        return "unknown field"
    valid = sorted(section.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
    if close:
        return f"unknown field, did you mean `{close[0]}`?"
    return "unknown field; fields here: " + ", ".join(f"`{name}`" for name in valid)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config file; errors name the file and line."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def load_config(
    path: str | Path | None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> RiverlineConfig:
    """Build the configuration from a YAML file, the environment and explicit overrides."""
    data = read_yaml(path) if path is not None else {}
    data = _deep_merge(data, _env_values(dict(os.environ if environ is None else environ)))
    data = _deep_merge(data, _drop_none(overrides or {}))
    try:
        config = RiverlineConfig(**data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e)) from None
    if problem := model_misfit(config):
        raise ConfigError(f"invalid configuration:\n  {problem}")
    return config


def model_misfit(config: RiverlineConfig) -> str | None:
    """Why the model cannot go with the metric or the allowed labels; None if they fit.

    >>> print(model_misfit(load_config(None, {"evaluation": {"metric": "Accuracy"}})))
    None
    >>> cfg = RiverlineConfig(evaluation={"metric": "MAE"})
    >>> print(model_misfit(cfg))  # doctest: +ELLIPSIS
    evaluation.metric: 'MAE' does not score a classifier, and model.spec ... is one; ...
    """
    from pipeline.models import is_classifier, is_regressor

    model = parse_model_spec(config.model.spec)
    classifier, regressor = is_classifier(model), is_regressor(model)
    if not (classifier or regressor):
        return None  # anomaly detectors and the like: River's metrics say what they take
    kind = "classifier" if classifier else "regressor"
    advice = "a classification metric such as Accuracy" if classifier else "MAE, RMSE or R2"
    evaluation = config.evaluation
    for field, name in [("metric", evaluation.metric)] + [
        ("extra_metrics", extra) for extra in evaluation.extra_metrics
    ]:
        if not make_metric(name).works_with(model):
            return (
                f"evaluation.{field}: {name!r} does not score a {kind}, and model.spec "
                f"{config.model.spec!r} is one; use {advice}, or a model that fits the metric"
            )
    for label in config.validation.labels or ():
        if regressor and (isinstance(label, bool) or not isinstance(label, int | float)):
            return (
                f"validation.labels: {label!r} is not a number, and model.spec "
                f"{config.model.spec!r} is a regressor; use a classifier for classes"
            )
        if classifier and isinstance(label, float) and not label.is_integer():
            return (
                f"validation.labels: {label!r} is not a class, and model.spec "
                f"{config.model.spec!r} is a classifier; use a regressor for numbers"
            )
    if classifier and config.review.policy != "none" and not known_classes(config):
        # A person answers with a class; before the first label the page would offer none.
        return (
            f"validation.labels: review.policy {config.review.policy!r} asks people for a "
            "class, and no class is known before the first label; set validation.labels to "
            "the classes (e.g. [false, true]), or give fallback rules or a fallback.default"
        )
    return None


def known_classes(config: RiverlineConfig) -> list[Any]:
    """The classes known before any label: validation.labels, then the fallback's answers.

    A person reviewing the very first events answers with one of these (the model's classes
    join them once it has some).

    >>> known_classes(RiverlineConfig(fallback={"default": False, "rules": [
    ...     {"feature": "x", "op": ">", "value": 1, "prediction": True}]}))
    [True, False]
    """
    found: list[Any] = []
    candidates = [
        *(config.validation.labels or ()),
        *(rule.prediction for rule in config.fallback.rules),
        config.fallback.default,
    ]
    for value in candidates:
        # By type as well as value: True == 1 in Python, yet they are two classes.
        if value is not None and not any(type(c) is type(value) and c == value for c in found):
            found.append(value)
    return found


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    """Unset CLI flags arrive as None and must not override the file."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            nested = _drop_none(value)
            if nested:
                out[key] = nested
        elif value is not None:
            out[key] = value
    return out
