"""Humans in the loop: which events go to people, within what budget, and what waits for them.

Plain book-keeping with no I/O; the core calls it from ``on_event`` and ``on_label`` and keeps
the :class:`ReviewBook` in its checkpointed state, so a restart loses no request and no held
event. Every clock here is **event time** (the pipeline's watermark): the budget refills, and
deadlines pass, as the stream's times advance, so a replay asks for, and serves, exactly what a
live run did. In a live system event time is wall time; ``requested_at`` and ``deadline`` are on
that clock.

The budget is a token bucket over event time: ``budget_per_minute`` tokens a minute, holding at
most one minute's worth (never less than one).

>>> bucket = TokenBucket(per_minute=2.0)
>>> [bucket.take(ts) for ts in (0.0, 1.0, 2.0, 31.0, 32.0)]
[True, True, False, True, False]

Which events a policy picks (the entropy sampler is River's, seeded):

>>> cfg = ReviewConfig(policy="uncertain", confidence_below=0.8)
>>> policy = ReviewPolicy(cfg, pipeline="doc", classifier=True)
>>> book = ReviewBook.new(cfg, ("Accuracy",))
>>> policy.wants(book, {"x": 1}, {True: 0.7, False: 0.3}, served_by_model=True)
True
>>> policy.wants(book, {"x": 1}, {True: 0.9, False: 0.1}, served_by_model=True)
False
>>> policy.wants(book, {"x": 1}, None, served_by_model=False)  # no opinion: ask a person
True
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

from river import active, base

from pipeline.config import ReviewConfig
from pipeline.evaluation import RoleScore
from pipeline.neighbours import LabelledEvents
from pipeline.schemas import Prediction, ReviewRequest
from pipeline.telemetry import LatencyHistogram, LatencyQuantiles

# Classes remembered for the request's answer buttons; a regression target is not a class.
MAX_CLASSES = 100


class TokenBucket:
    """Requests allowed per minute of event time; a full bucket holds one minute's worth."""

    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, per_minute)
        self.tokens = self.capacity
        self.last_ts: float | None = None

    def _refill(self, ts: float) -> None:
        if self.last_ts is not None and ts > self.last_ts:
            self.tokens = min(self.capacity, self.tokens + (ts - self.last_ts) * self.rate)
        # Event time may step back (out-of-order events): the bucket never refills backwards.
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)

    def take(self, ts: float) -> bool:
        """One token at event time ``ts``, if there is one."""
        self._refill(ts)
        # A whole token up to float rounding: refills of 0.1 must add up to 1 after ten steps.
        if self.tokens >= 1.0 - 1e-9:
            self.tokens = max(0.0, self.tokens - 1.0)
            return True
        return False


class GivenProba(base.Classifier):
    """Hands River's sampler the probabilities the core already has (no second predict).

    ``EntropySampler.predict_proba_one(x, proba=p)`` then returns ``(p, ask)``.
    """

    def learn_one(self, x: dict[str, Any], y: Any) -> None:  # type: ignore[override]
        pass

    def predict_proba_one(  # type: ignore[override]
        self, x: dict[str, Any], proba: dict[Any, float] | None = None
    ) -> dict[Any, float]:
        return proba or {}


class _NoTruth:
    """No ground truth yet (the class itself is the sentinel: it unpickles as itself)."""


_NO_TRUTH: Any = _NoTruth


@dataclass(slots=True)
class Requested:
    """A request that awaits its answer; in defer mode it holds the event's prediction."""

    id: str
    key: str
    ts: float
    requested_at: float
    deadline: float | None
    held: Prediction | None = None  # defer mode: served once a person answers or at deadline
    truth: Any = _NO_TRUTH  # a ground-truth label that came before the person's answer


@dataclass(slots=True)
class AwaitingTruth:
    """A person's answer the model learned from, until ground truth scores it."""

    answer: Any
    x: dict[str, Any]  # to learn from ground truth that says otherwise


@dataclass(frozen=True, slots=True)
class ReviewOutput:
    """A record the edge publishes: a request, or a prediction served by the review loop."""

    key: str
    record: ReviewRequest | Prediction


COUNTS = (
    "sent",
    "answered",
    "expired",
    "skipped_budget",
    "skipped_pending",
    "late_answers",
    "answers_unjoined",
    "served_human",
    "served_deadline",
    "corrections",
    "human_unscored",
    "answers_after_truth",  # scored only: ground truth had taught the model already
)


@dataclass
class ReviewBook:
    """Everything the review loop must remember across a restart (part of ``CoreState``)."""

    requested: OrderedDict[str, Requested] = field(default_factory=OrderedDict)
    awaiting_truth: OrderedDict[str, AwaitingTruth] = field(default_factory=OrderedDict)
    counts: Counter[str] = field(default_factory=Counter)
    learned_by_source: Counter[str] = field(default_factory=Counter)
    time_to_answer: LatencyHistogram = field(default_factory=LatencyHistogram)
    human: RoleScore = field(default_factory=lambda: RoleScore(("Accuracy",)))
    classes: list[Any] = field(default_factory=list)
    bucket: TokenBucket | None = None
    sampler: active.EntropySampler | None = None
    # entropy with target_share: the recent share of asks (a moving average), which steers the
    # sampler's discount factor (a checkpoint from before it reads the class default).
    asked_share: float | None = None
    # Recent labelled events, for a request's neighbours (review.neighbours); None when off
    # or in a checkpoint from before it (ensure_review_book adds one).
    neighbours: LabelledEvents | None = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        answer = state.get("time_to_answer")
        if isinstance(answer, LatencyQuantiles):
            # A checkpoint from before the histogram: its estimates go on as the histogram's start.
            state["time_to_answer"] = LatencyHistogram.from_summary(answer.summary())
        self.__dict__.update(state)

    @classmethod
    def new(cls, config: ReviewConfig, metric_names: tuple[str, ...]) -> ReviewBook:
        return cls(
            human=RoleScore(metric_names),
            bucket=TokenBucket(config.budget_per_minute) if config.budget_per_minute else None,
            sampler=active.EntropySampler(
                GivenProba(), discount_factor=config.discount_factor, seed=config.seed
            )
            if config.policy == "entropy"
            else None,
        )

    def see_class(self, y: Any) -> None:
        if not has_class(self.classes, y) and len(self.classes) < MAX_CLASSES:
            self.classes.append(y)

    def remember_answer(self, label_id: str, answer: Any, x: dict[str, Any], bound: int) -> None:
        """Keep a learned human answer until ground truth comes; the oldest go past ``bound``."""
        self.awaiting_truth[label_id] = AwaitingTruth(answer, x)
        while len(self.awaiting_truth) > bound:
            self.awaiting_truth.popitem(last=False)
            self.counts["human_unscored"] += 1

    def report(self) -> dict[str, Any]:
        return {
            **{name: int(self.counts[name]) for name in COUNTS},
            "pending": len(self.requested),
            "held": sum(1 for r in self.requested.values() if r.held is not None),
            "awaiting_truth": len(self.awaiting_truth),
            "labels_by_source": dict(sorted(self.learned_by_source.items())),
            "human_scored": self.human.count,
            "human_metrics": self.human.values(),
            "time_to_answer_s": self.time_to_answer.summary(),
        }


def has_class(classes: list[Any], value: Any) -> bool:
    """By type as well as value: ``True == 1`` in Python, yet they are two classes."""
    return any(type(c) is type(value) and c == value for c in classes)


def merged_classes(*groups: Any) -> list[Any]:
    """The classes of every group in order, each once, at most :data:`MAX_CLASSES`.

    >>> merged_classes([False, True], {True: 0.2, False: 0.8}, [1, "x"])
    [False, True, 1, 'x']
    """
    out: list[Any] = []
    for group in groups:
        for value in group:
            if len(out) >= MAX_CLASSES:
                return out
            if not has_class(out, value):
                out.append(value)
    return out


# Steering the entropy sampler to a share of asks: the moving average's weight per event (a
# memory of a few hundred events), and how fast the discount factor follows the gap. Measured
# on Phishing, Bananas and ImageSegments (benchmarks/active_learning.py; README).
SHARE_ALPHA = 0.005
SHARE_GAIN = 0.05
DISCOUNT_RANGE = (0.2, 50.0)


def steer(book: ReviewBook, asked: bool, target: float) -> None:
    """Move the sampler's discount factor so that its share of asks tends to ``target``:
    a higher factor asks less. Pure arithmetic on the checkpointed book, so a replay steers
    the same way.

    >>> book = ReviewBook.new(ReviewConfig(policy="entropy"), ("Accuracy",))
    >>> for _ in range(200):
    ...     steer(book, True, 0.35)  # asking about everything: the factor grows
    >>> book.sampler.discount_factor > 3.0
    True
    """
    sampler = book.sampler
    assert sampler is not None
    share = target if book.asked_share is None else book.asked_share
    share += SHARE_ALPHA * ((1.0 if asked else 0.0) - share)
    book.asked_share = share
    low, high = DISCOUNT_RANGE
    factor = sampler.discount_factor * math.exp(SHARE_GAIN * (share - target))
    sampler.discount_factor = min(high, max(low, factor))


class ReviewPolicy:
    """The configured choice of events for people (stateless: the state is the book)."""

    def __init__(
        self,
        config: ReviewConfig,
        pipeline: str,
        classifier: bool,
        classes: list[Any] | tuple[Any, ...] | None = None,
    ) -> None:
        self.config = config
        self.enabled = config.policy != "none"  # read on every event
        # The classes known before any label (validation.labels, the fallback's answers: see
        # config.known_classes); a request adds the model's and those seen since.
        self.classes: list[Any] = list(classes or ()) if classifier else []
        self.pipeline = pipeline
        self.classifier = classifier
        if config.policy == "entropy" and not classifier:
            from pipeline.config import ConfigError

            raise ConfigError(
                "invalid configuration:\n  review.policy: entropy needs a classifier "
                "(class probabilities); use uncertain or unserved for a regressor"
            )

    def wants(
        self, book: ReviewBook, x: dict[str, Any], model_pred: Any, served_by_model: bool
    ) -> bool:
        """Whether the policy picks this event (before budget and bounds)."""
        policy = self.config.policy
        no_opinion = model_pred is None or model_pred == {}
        if policy == "unserved":
            return not served_by_model
        if policy == "uncertain":
            if no_opinion:
                return True
            if not self.classifier:
                return False  # a regressor states no confidence: only "no opinion" counts
            return float(max(model_pred.values())) < self.config.confidence_below
        if policy == "entropy":
            # River's sampler never asks about an empty distribution (zero entropy), but a
            # model with no opinion yet needs labels the most: ask a person.
            if no_opinion or book.sampler is None:
                return True
            if sum(1 for p in model_pred.values() if p > 0) < 2:
                # One class with all the weight: certain. (River's sampler would divide by
                # log2(1) = 0 when that weight is not exactly 1.)
                ask = False
            else:
                ask = bool(book.sampler.predict_proba_one(x, proba=model_pred)[1])
            target = self.config.target_share
            if target is not None:
                steer(book, ask, target)
            return ask
        return False

    def admit(self, book: ReviewBook, ts: float) -> bool:
        """Within ``max_pending`` and the budget? An event beyond them is counted, not sent."""
        if len(book.requested) >= self.config.max_pending:
            book.counts["skipped_pending"] += 1
            return False
        if book.bucket is not None and not book.bucket.take(ts):
            book.counts["skipped_budget"] += 1
            return False
        return True

    def deadline(self, ts: float) -> float | None:
        seconds = self.config.deadline_seconds
        return None if seconds is None else ts + seconds
