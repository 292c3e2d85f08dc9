"""The learning core: ordered events and labels in, served predictions out. No I/O.

The rule is River's prequential one (``evaluate.progressive_val_score``): on an event, ask the
model and keep its answer; on the event's label, score that kept answer, then learn.

>>> from pipeline.config import load_config
>>> from pipeline.schemas import Event, Label
>>> core = LearningCore.from_config(load_config(None, {
...     "name": "doctest", "model": {"spec": "linear_model.LogisticRegression"},
...     "fallback": {"default": False}, "gating": {"min_labels": 1},
... }))
>>> core.on_event(Event(id="1", ts=0.0, features={"x": 1.0})).prediction.source
'default'
>>> core.on_label(Label(id="1", ts=1.0, label=True)).learned
True
>>> core.state.labels, core.state.gating.mode
(1, 'shadow')
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, cast

from river import base

from pipeline.challengers import Challengers
from pipeline.config import ConfigError, RiverlineConfig, known_classes
from pipeline.evaluation import ABSTAIN, Evaluator
from pipeline.explain import ExplainMemory, ExplainSettings
from pipeline.fallback import Fallback
from pipeline.gating import Decision, Gating
from pipeline.guard import ModelGuard, finite_prediction
from pipeline.importance import Importance
from pipeline.join import DUPLICATE, JoinBuffer, Pending
from pipeline.models import is_classifier, make_drift_detector, parse_model_spec
from pipeline.neighbours import LabelledEvents
from pipeline.review import ReviewBook, ReviewOutput, ReviewPolicy, TokenBucket
from pipeline.review_hooks import ReviewLoop
from pipeline.schemas import Event, Label, Prediction, encode, encode_fields
from pipeline.seen_ids import SeenIds
from pipeline.served import UNPUBLISHED, Published, ServedJoin
from pipeline.serving.serve import Server

# serve_at_once's answers kept for on_event, at most (about a fetch's worth is ever in use).
EARLY_MAX = 100_000


class Tally(Counter[str]):
    """A Counter whose item assignment is dict's own; pickled as a plain Counter.

    Counter defines ``__delitem__`` in Python, so CPython sends every ``counter[key] += 1``
    through a slot wrapper that looks the method up (twice a dict's cost); with both item
    methods dict's, it calls dict's directly. The core counts two of these per record. One
    difference: deleting a missing key raises KeyError, as from a dict (nothing deletes).

    >>> import pickle
    >>> tally = Tally({"model": 2})
    >>> tally["model"] += 1
    >>> tally["default"] += 1
    >>> tally, pickle.loads(pickle.dumps(tally))
    (Tally({'model': 3, 'default': 1}), Counter({'model': 3, 'default': 1}))
    """

    __slots__ = ()
    __setitem__ = dict.__setitem__  # type: ignore[assignment]
    __delitem__ = dict.__delitem__  # type: ignore[assignment]

    def __reduce__(self) -> tuple[type[Counter[str]], tuple[dict[str, int]]]:
        return Counter, (dict(self),)


def _tally(counts: Counter[str]) -> Counter[str]:
    """``counts`` as a Tally (a Counter restored from a checkpoint), or itself if it is one."""
    return counts if type(counts) is Tally else Tally(counts)


@dataclass
class CoreState:
    """Everything the core learned; pickled whole into a checkpoint."""

    model: base.Estimator
    evaluator: Evaluator
    gating: Gating
    join: JoinBuffer
    events: int = 0
    labels: int = 0  # labels joined to their event and scored
    # Of those, the ones learn_one took without raising, plus one per promotion by hand (a new
    # champion with no label learned is still a new model): the model version.
    learned: int = 0
    watermark: float = float("-inf")
    served_by: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    expired_unlabelled: int = 0
    expired_labels: int = 0
    duplicate_labels: int = 0
    model_errors: int = 0
    # Labels whose learning turned the model non-finite, undone (pipeline/guard.py); a class
    # default, so checkpoints from before it read 0.
    model_rollbacks: int = 0
    drift_detector: Any = None
    drift_events: list[dict[str, Any]] = field(default_factory=list)
    # The learning curve, thinned to at most history_max samples by doubling the spacing.
    history: list[dict[str, Any]] = field(default_factory=list)
    history_every: int = 10
    # Humans in the loop (pipeline/review.py); None in checkpoints from before it existed.
    review: ReviewBook | None = None
    # Split mode (learner): served answers come from the published predictions; None in run.
    served_join: ServedJoin | None = None
    # Models learning beside the champion (pipeline/challengers.py); None: none configured.
    challengers: Challengers | None = None
    # Global feature importance (explain.importance); None when off, or in checkpoints from
    # before it existed (the class default answers for them).
    importance: Importance | None = None
    # Event ids seen beyond the join's TTL (join.seen_ids); None in older checkpoints, or off.
    seen_ids: SeenIds | None = None
    # What explanations depend on besides the model (the recent events a sampled one is
    # measured against, the one-in-every count): kept so that a restart explains the same.
    # None when explanations are off, or in checkpoints from before it (started afresh).
    explain_memory: ExplainMemory | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record the core could not use; the edge dead-letters it with its origin."""

    reason: str
    message: str
    origin: Any


T = TypeVar("T")

OutcomeStatus = Literal["served", "learned", "parked", "duplicate", "rejected", "scored"]

_NONE: tuple[()] = ()  # an outcome's lists until something is added to them
_NO_REVIEW = cast("list[ReviewOutput]", _NONE)


def _added(items: Sequence[T], more: Sequence[T]) -> list[T]:
    """``items`` with ``more`` at the end: the same list, or a new one in place of ``_NONE``."""
    if isinstance(items, list):
        items.extend(more)
        return items
    return [*items, *more]


class Outcome:
    """What one event or label led to.

    The served prediction is kept as its wire fields; the pydantic :class:`Prediction` is only
    built when someone asks for ``prediction`` (the consumer encodes the fields directly).
    ``decisions``, ``rejections``, ``expired`` and ``review`` are read-only empty tuples until
    something is added (with ``decide``, ``reject``, ``expire`` and ``add_review``): nearly
    every record adds nothing, and four lists per record cost more than the record's join.
    """

    # Defaults on the class: the hot path makes its outcomes with ``_Blank()``, which
    # sets nothing (half the time of ``Outcome()``), then sets what differs.
    _prediction: Prediction | None = None
    prediction_fields: dict[str, Any] | None = None  # for an event that was served
    status: OutcomeStatus = "served"
    decisions: Sequence[Decision] = _NONE
    rejections: Sequence[Rejection] = _NONE
    expired: Sequence[Pending] = _NONE  # unlabelled events past their TTL
    learned: bool = False  # a label was learned from (an event's label may have come first)
    # Typed as the list the edge hands on (consumers.outputs.Outputs.review takes a list);
    # it is one whenever it is not empty.
    review: list[ReviewOutput] = _NO_REVIEW  # requests, held and human predictions

    def __init__(
        self,
        prediction: Prediction | None = None,
        status: OutcomeStatus = "served",
        decisions: list[Decision] | None = None,
        rejections: list[Rejection] | None = None,
        expired: list[Pending] | None = None,
        learned: bool = False,
        prediction_fields: dict[str, Any] | None = None,
        review: list[ReviewOutput] | None = None,
    ) -> None:
        self._prediction = prediction
        self.prediction_fields = prediction_fields
        self.status = status
        self.decisions = _NONE if decisions is None else decisions
        self.rejections = _NONE if rejections is None else rejections
        self.expired = _NONE if expired is None else expired
        self.learned = learned
        self.review = _NO_REVIEW if review is None else review

    def decide(self, decision: Decision) -> None:
        self.decisions = _added(self.decisions, (decision,))

    def reject(self, rejection: Rejection) -> None:
        self.rejections = _added(self.rejections, (rejection,))

    def expire(self, events: Sequence[Pending]) -> None:
        self.expired = _added(self.expired, events)

    def add_review(self, output: ReviewOutput) -> None:
        self.review = _added(self.review, (output,))

    @property
    def prediction(self) -> Prediction | None:
        """What was served for an event (None for a label or a rejected event)."""
        if self._prediction is None and self.prediction_fields is not None:
            self._prediction = Prediction(**self.prediction_fields)
        return self._prediction

    @prediction.setter
    def prediction(self, value: Prediction | None) -> None:
        self._prediction, self.prediction_fields = value, None

    def prediction_json(self) -> bytes | None:
        """The prediction as published: the same bytes as ``encode(outcome.prediction)``."""
        if self.prediction_fields is not None and self._prediction is None:
            return encode_fields(self.prediction_fields)
        return None if self._prediction is None else encode(self._prediction)

    def __repr__(self) -> str:
        return (
            f"Outcome(prediction={self.prediction!r}, status={self.status!r}, "
            f"decisions={list(self.decisions)!r}, rejections={list(self.rejections)!r}, "
            f"expired={list(self.expired)!r}, learned={self.learned!r}, "
            f"review={list(self.review)!r})"
        )


def _seen_ids(config: RiverlineConfig, kept: SeenIds | None) -> SeenIds | None:
    """The memory of event ids the config asks for: the one restored if it is that, else a
    new one (a checkpoint from before it, or other settings, starts it empty)."""
    capacity, error_rate = config.join.seen_ids, config.join.seen_ids_error_rate
    if capacity == 0:
        return None
    if kept is not None and (kept.capacity, kept.error_rate) == (capacity, error_rate):
        return kept
    return SeenIds(capacity, error_rate)


class OriginPolicy(Protocol):
    """What the join buffer keeps of a record's origin (opaque to the core; the edge knows it),
    and the bytes it stands for: a pending event's features are kept already, so its origin
    need not keep the record's bytes too; an evicted event's dead letter gets them back."""

    def keep_event(self, origin: Any) -> tuple[Any, int]:
        """The origin to keep with a pending event, and the event's size in bytes."""
        ...

    def pending_origin(self, pending: Pending) -> Any:
        """The origin to dead-letter a pending event with (evicted, rolled back): its value."""
        ...

    def size(self, origin: Any) -> int:
        """A parked label's size in bytes (its origin is kept as it is)."""
        ...


class _Blank(Outcome):
    """An Outcome with its class defaults: ``Outcome.__init__`` is not called, nor is anything
    else (object's own ``__init__``, which CPython calls as C; a third cheaper than
    ``object.__new__(Outcome)`` too)."""

    __slots__ = ()
    __init__ = object.__init__  # type: ignore[assignment]


class LearningCore(ReviewLoop):
    def __init__(
        self,
        state: CoreState,
        fallback: Fallback,
        *,
        explain_top_k: int | None = None,
        explain: ExplainSettings | None = None,
        drift_demotes: bool = True,
        history_max: int = 2000,
        pipeline: str | None = None,
        review: ReviewPolicy | None = None,
        rollback_every: int | None = 1000,
    ) -> None:
        self.review = review
        self.state = state
        # Not in the state (not checkpointed): a restored core starts from the restored model.
        # None when turned off, or for a model with no learned numbers the guard can read.
        self.rollback_every = rollback_every
        self.guard = self._guard_for(state.model)
        # The counters counted on every record, as Tallies (checkpoints keep plain Counters).
        state.served_by = _tally(state.served_by)
        if state.review is not None:
            state.review.learned_by_source = _tally(state.review.learned_by_source)
        self.fallback = fallback
        self.classifier = is_classifier(state.model)
        # The serving rule, shared with the predictors (pipeline/serving/serve.py).
        self.server = Server(self.classifier, explain_top_k, pipeline, explain)
        explainer = self.server.explainer
        state.explain_memory = (
            explainer.remember(state.explain_memory) if explainer is not None else None
        )
        self.drift_demotes = drift_demotes
        self.history_max = history_max
        # serve_at_once's model answers by event id, with the model and label count they were
        # made at: on_event reuses one when nothing was learnt since (None until first used).
        self._early: dict[str, tuple[Any, int, Any]] | None = None
        # Read once per record: None unless challengers learn beside the champion.
        board = state.challengers
        self._challengers = board if board is not None and board.members else None
        self._origins: OriginPolicy | None = None

    def keep_origins(self, policy: OriginPolicy) -> None:
        """How the edge's origins are kept in the join buffer (see :class:`OriginPolicy`);
        without one, as given, and of size 0 (nothing counts against max_pending_bytes)."""
        self._origins = policy

    @property
    def pipeline(self) -> str | None:
        """The pipeline's name, stamped on every prediction."""
        return self.server.pipeline

    @property
    def explain_top_k(self) -> int | None:
        """Feature contributions per model-served prediction; None: no explanation."""
        return self.server.explain_top_k

    @property
    def explain_settings(self) -> ExplainSettings | None:
        """How predictions are explained (None: they are not), handed to predictors."""
        explainer = self.server.explainer
        return explainer.settings if explainer is not None else None

    @staticmethod
    def new_state(config: RiverlineConfig) -> CoreState:
        model = parse_model_spec(config.model.spec)
        evaluator = Evaluator(
            config.evaluation.metric,
            config.evaluation.extra_metrics,
            config.gating.window,
            config.evaluation.slice_by,
            config.evaluation.max_slices,
        )
        detector = config.drift.detector
        return CoreState(
            drift_detector=make_drift_detector(detector) if detector else None,
            history_every=config.evaluation.history_every,
            model=model,
            evaluator=evaluator,
            gating=Gating(config.gating, evaluator.bigger_is_better),
            join=JoinBuffer(
                config.join.ttl_events,
                config.join.ttl_seconds,
                config.join.max_pending,
                config.join.max_pending_bytes,
            ),
        )

    @classmethod
    def from_config(cls, config: RiverlineConfig, state: CoreState | None = None) -> LearningCore:
        """A core for this config, fresh or resumed from a checkpointed state."""
        state = state if state is not None else cls.new_state(config)
        ensure_review_book(config, state)
        ensure_challengers(config, state)
        ensure_importance(config, state)
        # Settings newer than some checkpoints: the config's, whatever the state says.
        state.join.max_pending_bytes = config.join.max_pending_bytes
        state.seen_ids = _seen_ids(config, state.seen_ids)
        return cls(
            state,
            Fallback.from_config(config.fallback),
            explain=ExplainSettings.from_config(config.explain),
            drift_demotes=config.drift.demote,
            history_max=config.evaluation.history_max,
            pipeline=config.name,
            review=ReviewPolicy(
                config.review, config.name, is_classifier(state.model), known_classes(config)
            ),
            rollback_every=config.model.rollback_every,
        )

    @property
    def model_version(self) -> int:
        """The number of labels the model has learned from (a learn_one that raised is not),
        plus one per challenger promoted by hand: a version number means one model, so a new
        champion made at a label count already published needs a number of its own."""
        return self.state.learned

    def _reject(self, outcome: Outcome, reason: str, message: str, origin: Any) -> None:
        self.state.dead_letters[reason] += 1
        outcome.reject(Rejection(reason, message, origin))

    def serve_at_once(self, event: Event) -> bytes | None:
        """The prediction :meth:`on_event` would publish for ``event`` now, changing nothing
        (``ordering.serve: immediate``: served at fetch, learnt from in order later); None for
        an event id the join holds (``on_event`` rejects it as a duplicate).

        >>> core = LearningCore.from_config(RiverlineConfig(checkpoint={"secret": "s"}))
        >>> event = Event(id="e1", ts=1.0, features={"x": 1.0})
        >>> served = core.serve_at_once(event)
        >>> served == core.on_event(event).prediction_json(), core.serve_at_once(event)
        (True, None)
        """
        state = self.state
        values = event.__dict__
        event_id = values["id"]
        join = state.join
        if event_id in join.pending or event_id in join.joined:
            return None
        x = values["features"]
        if None in x.values():
            x = {k: v for k, v in x.items() if v is not None}
        model: Any = state.model
        try:
            model_pred = model.predict_proba_one(x) if self.classifier else model.predict_one(x)
        except Exception:
            model_pred = None  # on_event counts and dead-letters it, in order
        else:
            if finite_prediction(model_pred):
                early = self._early
                if early is None or len(early) >= EARLY_MAX:
                    # Revoked partitions' events never come in order: bounded by a reset.
                    early = self._early = {}
                early[event_id] = (model, state.labels, model_pred)
            else:
                model_pred = None
        answer = self.fallback.constant or self.fallback.answer(x)
        fields, _ = self.server.serve(
            event_id, values["ts"], x, model_pred, answer, state.gating, model, state.learned
        )
        if type(fields) is dict:
            return encode_fields(fields)
        assert isinstance(fields, Prediction)
        return encode(fields)

    def on_event(self, event: Event, origin: Any = None) -> Outcome:
        # The hot path: what each helper does is inlined where it is one test on the usual path
        # (nothing to expire, no review request waiting, no label that came first).
        state = self.state
        join = state.join
        # The fields straight from the model's __dict__ (where pydantic keeps them): reading
        # them as attributes goes through pydantic's __getattr__ hook, at 3-4 times the cost.
        values = event.__dict__
        event_id = values["id"]
        # Exactly within the TTL (the join's own ids), then the Bloom filters' memory beyond it.
        seen = state.seen_ids
        if (
            event_id in join.pending
            or event_id in join.joined
            or (seen is not None and seen.check_and_add(event_id))
        ):
            rejected = Outcome(None, "rejected")
            self._reject(
                rejected, "duplicate_event", f"event id {event_id!r} was seen before", origin
            )
            return rejected
        outcome: Outcome = _Blank()
        state.events = events = state.events + 1
        ts = values["ts"]
        if ts > state.watermark:  # max(), without the call
            state.watermark = ts
        # Null features are missing values: River models expect absent keys, not None. With
        # none, the features themselves, as River's own loop hands them over (not copied).
        x = values["features"]
        if None in x.values():
            x = {k: v for k, v in x.items() if v is not None}
        model: Any = state.model
        kept_answers = self._early
        answered = kept_answers.pop(event_id, None) if kept_answers else None
        try:
            if answered is not None and answered[0] is model and answered[1] == state.labels:
                # Served at fetch (ordering.serve immediate) by this very model, no label since.
                model_pred = answered[2]
            else:
                model_pred = model.predict_proba_one(x) if self.classifier else model.predict_one(x)
        except Exception as e:
            # A model that chokes on one strange vector must not stop serving: no opinion.
            model_pred = None
            state.model_errors += 1
            self._reject(outcome, "model_error", f"predict raised {type(e).__name__}: {e}", origin)
        else:
            if not finite_prediction(model_pred):
                # An input the model cannot score (a huge number): no opinion, the fallback
                # serves; the model itself is checked when it learns (see _learn).
                model_pred = None
                state.model_errors += 1
        challengers = self._challengers
        if challengers is not None:
            challengers.predict(event_id, x)
        answer = self.fallback.constant or self.fallback.answer(x)
        fields, kept_model = self.server.serve(
            event_id, ts, x, model_pred, answer, state.gating, model, state.learned
        )
        if type(fields) is dict:
            outcome.prediction_fields = fields
            value, source = fields["prediction"], fields["source"]
        else:
            assert isinstance(fields, Prediction)
            outcome.prediction = fields
            value, source = fields.prediction, fields.source
        state.served_by[source] += 1
        served = value if source != "model" else kept_model
        if state.served_join is not None:
            # Scored once the predictors' answer is read (it may have been read already).
            early = state.served_join.take_early(event_id)
            served = UNPUBLISHED if early is None else state.served_join.answer(early, kept_model)
        review = self.review
        if review is not None and review.enabled:
            self._review_event(event, x, model_pred, answer, outcome)
        origins = self._origins
        kept, size = (origin, 0) if origins is None else origins.keep_event(origin)
        parked, evicted = join.add(
            event_id,
            ts,
            x,
            kept_model,
            answer.prediction,
            served,
            values["attributes"],
            events,
            kept,
            size,
        )
        if evicted:
            for old in evicted:
                if challengers is not None:
                    challengers.forget(old.id)
                state.expired_unlabelled += 1
                self._reject(
                    outcome,
                    "event_evicted",
                    f"join buffer full ({len(join)} pending, {join.pending_bytes:,} bytes; "
                    f"join.max_pending {join.max_pending}, max_pending_bytes "
                    f"{join.max_pending_bytes}): event {old.id!r} dropped unlabelled",
                    old.origin if origins is None else origins.pending_origin(old),
                )
        if parked is not None:
            label = parked.label
            self._learn(
                join.match(event_id),  # type: ignore[arg-type]
                label.label,
                label.source,
                label,
                outcome,
                parked.origin,
            )
        if events >= join.horizon:
            self._expire(outcome)
        book = state.review
        if book is not None and book.requested:
            self._review_tick(outcome)
        return outcome

    def on_label(self, label: Label, origin: Any = None) -> Outcome:
        state = self.state
        outcome: Outcome = _Blank()
        outcome.status = "learned"
        values = label.__dict__  # as in on_event: not through pydantic's __getattr__
        ts = values["ts"]
        if ts > state.watermark:
            state.watermark = ts
        join = state.join
        book = state.review
        source = values["source"]
        # _review_label has nothing to do for ground truth while no request or answer waits.
        if (
            book is not None
            and (book.requested or book.awaiting_truth or source != "ground_truth")
            and self._review_label(label, outcome)
        ):
            self._expire(outcome)
            self._review_tick(outcome)
            return outcome
        found = join.match(values["id"])
        if type(found) is Pending:
            self._learn(found, values["label"], source, label, outcome, origin)
        elif found is DUPLICATE:
            state.duplicate_labels += 1
            outcome.status = "duplicate"
        else:
            outcome.status = "parked"
            origins = self._origins
            size = 0 if origins is None else origins.size(origin)
            for old in join.park_label(label, state.events, origin, size):
                state.expired_labels += 1
                self._reject(
                    outcome,
                    "label_orphaned",
                    f"too many labels wait for their events: {old.label.id!r} dropped",
                    old.origin,
                )
        if state.events >= join.horizon:
            self._expire(outcome)
        if book is not None and book.requested:
            self._review_tick(outcome)
        return outcome

    def on_prediction(self, published: Published) -> Outcome:
        """Split mode: what a predictor served for an event, scored once its label is known."""
        state = self.state
        outcome = Outcome(status="scored")
        served_join = state.served_join
        if served_join is None:
            return outcome
        pending = state.join.pending.get(published.id)
        if pending is not None:
            if pending.served is UNPUBLISHED:
                pending.served = served_join.answer(published, pending.model)
            else:
                served_join.ignored += 1  # published again (at-least-once)
            return outcome
        waiting = served_join.take_waiting(published.id)
        if waiting is None:
            if state.join.has_event(published.id):
                served_join.ignored += 1  # its event was scored already: published again
            else:
                served_join.keep_early(published)  # its event is still to be read
            return outcome
        y, classes, attributes = waiting
        answer = served_join.answer(published, classes)
        state.evaluator.update(y, None, None, answer, attributes)
        served_join.scored += 1
        return outcome

    def enable_published_scoring(self, max_waiting: int) -> None:
        """Split mode: score served answers from the predictions topic (see pipeline.served)."""
        if self.state.served_join is None:
            self.state.served_join = ServedJoin(max_waiting)

    def _learn(
        self, pending: Pending, y: Any, source: str, label: Label, outcome: Outcome, origin: Any
    ) -> None:
        """Score the event's kept answers on its label ``y`` (``label``'s, as is ``source``),
        then learn from it."""
        state = self.state
        served = pending.served
        if state.served_join is not None:
            if served is UNPUBLISHED:
                served = None  # not yet: scored when the prediction is read
                state.served_join.wait(pending.id, y, pending.model, pending.attributes)
            else:
                state.served_join.scored += 1
        model_pred = pending.model
        model_label, model_metric, fallback_metric, size = state.evaluator.score(
            y, model_pred, pending.fallback, served, pending.attributes
        )
        model: Any = state.model
        importance = state.importance
        if importance is not None:  # with the model that answered, before it learns
            by = state.evaluator.slice_by
            attributes = pending.attributes
            group = str(attributes[by]) if by and attributes and by in attributes else None
            importance.update(model, pending.x, y, self.classifier, state.labels, group)
        try:
            model.learn_one(pending.x, y)
        except Exception as e:
            state.model_errors += 1
            self._reject(
                outcome, "model_error", f"learn_one raised {type(e).__name__}: {e}", origin
            )
        else:
            guard = self.guard
            if guard is None:
                state.learned += 1
            elif guard.finite(model):
                state.learned += 1
                guard.learned(pending.x, y, model)
            else:
                self._roll_back(guard, pending, outcome)
        state.labels = labels = state.labels + 1
        outcome.learned = True
        challengers = self._challengers
        if challengers is not None:
            promotion = challengers.learn(pending.id, pending.x, y, model_pred, labels, model)
            if promotion is not None:
                outcome.decide(self._promoted(promotion))
        book = state.review
        if book is not None:
            # What the review loop keeps of a learned label (the usual one: ground truth).
            book.learned_by_source[source] += 1
            labelled = book.neighbours
            if labelled is not None:
                labelled.add(pending.id, pending.x, y)
            review = self.review
            if review is not None and review.classifier and y not in book.classes:
                book.see_class(y)
            if source == "human":
                bound = review.config.max_pending if review is not None else 10_000
                book.remember_answer(label.id, y, pending.x, bound)
        detector = state.drift_detector
        if detector is not None and model_label is not ABSTAIN:
            # Feed the model's error to the drift detector; a detection may demote the model.
            if self.classifier:
                if type(model_pred) is not dict:
                    model_label = max(model_pred, key=model_pred.__getitem__)
                error = 0.0 if model_label == y else 1.0
            else:
                error = abs(float(y) - float(model_pred))
            before: float | None = getattr(detector, "estimation", None)
            detector.update(error)
            detected = detector.drift_detected
            if detected:
                self._drifted(detector, before, outcome)
                # The windows may have started afresh.
                model_metric, fallback_metric, size = state.evaluator.windowed_values()
        decision = state.gating.observe(labels, model_metric, fallback_metric, size)
        if decision is not None:
            outcome.decide(decision)
        if labels % state.history_every == 0:
            self._sample_history()

    def _roll_back(self, guard: ModelGuard, pending: Pending, outcome: Outcome) -> None:
        """Learning ``pending`` turned the model non-finite: back to the model as it was before
        (equal to one that never saw it), and the event dead-lettered as the cause."""
        state = self.state
        state.model = guard.restore()
        state.model_rollbacks += 1
        big = sorted(pending.x.items(), key=lambda kv: -_magnitude(kv[1]))[:3]
        shown = ", ".join(f"{name}={value!r}" for name, value in big)
        self._reject(
            outcome,
            "model_non_finite",
            f"learning event {pending.id!r} turned the model's state not finite (largest "
            f"features: {shown}); the model was rolled back to before it",
            # The join keeps features, not the record's bytes: the event's value again.
            pending.origin
            if (origins := self._origins) is None
            else origins.pending_origin(pending),
        )

    def _guard_for(self, model: Any) -> ModelGuard | None:
        """The guard of ``model``: None when turned off, or for a model with no learned numbers
        the guard can read."""
        every = self.rollback_every
        guard = ModelGuard(model, every) if every else None
        return guard if guard is not None and guard.checks else None

    def _promoted(self, promotion: Any) -> Decision:
        """A challenger is the champion now: it serves (through the gating) from here on."""
        self.state.model = promotion.model
        # The guard's copy is of the old champion: restoring it would undo the takeover.
        self.guard = self._guard_for(promotion.model)
        return Decision(
            "promotion",
            promotion.label_index,
            promotion.challenger_metric,
            promotion.champion_metric,
            promotion.reason,
        )

    def promote_challenger(self, name: str) -> Decision:
        """Promote challenger ``name`` by hand (KeyError naming the challengers if unknown)."""
        board = self._challengers
        if board is None:
            raise KeyError(f"no challenger {name!r} (none is configured)")
        decision = self._promoted(board.promote(name, self.state.labels, self.state.model))
        # Made between labels: without a number of its own, the version of the labels learned
        # so far (published already, perhaps) would stand for two models, and predictors that
        # hold it would never take the new champion (README, "Scaling out").
        self.state.learned += 1
        return decision

    def _drifted(self, detector: Any, before: float | None, outcome: Outcome) -> None:
        """The detector saw a change in the model's error: unless the error fell, start the
        windows afresh and demote the model."""
        state = self.state
        after = getattr(detector, "estimation", None)
        if before is not None and after is not None and after <= before:
            return  # the error fell: the model got better, which is no reason to demote it
        window = state.evaluator.windowed()
        name = type(detector).__name__
        state.drift_events.append({"label_index": state.labels, "detector": name})
        # What the windows saw before the change says nothing about after it: start afresh,
        # so the model must earn promotion again on the new concept.
        state.evaluator.reset_windows()
        if self.drift_demotes:
            decision = state.gating.demote(
                state.labels,
                float(window["model"]),
                float(window["fallback"]),
                f"drift detected by {name}",
            )
            if decision is not None:
                outcome.decide(decision)

    def _sample_history(self) -> None:
        state = self.state
        model_metric, fallback_metric, _ = state.evaluator.windowed_values()
        state.history.append(
            {
                "label": state.labels,
                "model": model_metric,
                "fallback": fallback_metric,
                "mode": state.gating.mode,
                "served": dict(state.served_by),
                "learned_by": dict(state.review.learned_by_source) if state.review else {},
                **({"importance": state.importance.top(8)} if state.importance else {}),
            }
        )
        if len(state.history) > self.history_max:
            state.history = state.history[1::2]
            state.history_every *= 2

    def _expire(self, outcome: Outcome) -> None:
        state = self.state
        expired, orphans = state.join.expire(state.watermark, state.events)
        state.expired_unlabelled += len(expired)
        challengers = self._challengers
        if challengers is not None:
            for pending in expired:
                challengers.forget(pending.id)
        outcome.expire(expired)
        for parked in orphans:
            state.expired_labels += 1
            self._reject(
                outcome,
                "label_orphaned",
                f"no event {parked.label.id!r} within the join TTL",
                parked.origin,
            )

    def _served_by(self) -> Counter[str]:
        """Predictions by source; a learner serves nothing itself: what predictors published."""
        served_join = self.state.served_join
        return served_join.by_source if served_join is not None else self.state.served_by

    def report(self) -> dict[str, Any]:
        """The numbers a person checks first, as plain JSON-able values."""
        state = self.state
        return {
            "events": state.events,
            "labels": state.labels,
            "metrics": state.evaluator.values(),
            "windowed": state.evaluator.windowed(),
            # A learner serves nothing itself: what the predictors published.
            "predictions_by_source": dict(
                sorted(
                    (state.served_join.by_source if state.served_join else state.served_by).items()
                )
            ),
            "promotions": [d.as_dict() for d in state.gating.promotions],
            "demotions": [d.as_dict() for d in state.gating.demotions],
            "mode": state.gating.mode,
            "model_version": self.model_version,
            "pending_events": len(state.join),
            "expired_unlabelled": state.expired_unlabelled,
            "expired_labels": state.expired_labels,
            "duplicate_labels": state.duplicate_labels,
            "model_errors": state.model_errors,
            "model_rollbacks": state.model_rollbacks,
            "dead_letters": dict(sorted(state.dead_letters.items())),
            "metric": state.evaluator.names[0],
            "bigger_is_better": state.evaluator.bigger_is_better,
            "drift": list(state.drift_events),
            "slices": state.evaluator.slice_values(),
            "history": list(state.history),
            "review": state.review.report() if state.review is not None else {},
            "served_from_predictions": (
                state.served_join.report() if state.served_join is not None else None
            ),
            **({"challengers": board.report()} if (board := state.challengers) else {}),
            # Only with explain.importance: a report without it keeps its keys.
            **(
                {
                    "importance": {
                        "values": state.importance.top(),
                        "updates": state.importance.updates,
                        "model_version": self.model_version,
                        "by_slice": state.importance.top_by_slice(3),
                    }
                }
                if state.importance is not None
                else {}
            ),
        }


def _magnitude(value: Any) -> float:
    """A feature value's size, for naming the likely culprits (strings and bools: 0)."""
    if type(value) is float or type(value) is int:
        return abs(value) if value == value else math.inf
    return 0.0


def ensure_challengers(config: RiverlineConfig, state: CoreState) -> None:
    """The challengers the config names, for a fresh state or one checkpointed without them
    (a state that has them keeps its own: they learned what it learned)."""
    if not config.model.challengers or state.challengers is not None:
        return
    classifier = is_classifier(state.model)
    for challenger in config.model.challengers:
        if is_classifier(parse_model_spec(challenger.spec)) != classifier:
            raise ConfigError(
                f"invalid configuration:\n  model.challengers: {challenger.name!r} is "
                f"{'not ' if classifier else ''}a classifier, and the champion is"
                f"{'' if classifier else ' not'}"
            )
    state.challengers = Challengers.from_config(config, classifier)


def ensure_importance(config: RiverlineConfig, state: CoreState) -> None:
    """Global importance as the config asks: started afresh (a checkpoint from before it, or
    with it off), or dropped (turned off)."""
    explain = config.explain
    if not explain.importance:
        state.importance = None
    elif state.importance is None:
        state.importance = Importance(
            explain.importance_alpha,
            explain.background,
            explain.importance_every,
            explain.seed,
            config.evaluation.max_slices,
        )


def ensure_review_book(config: RiverlineConfig, state: CoreState) -> None:
    """A review book for states checkpointed before it existed, or with another policy."""
    if state.review is None:
        state.review = ReviewBook.new(config.review, state.evaluator.names)
    elif config.review.policy == "entropy" and state.review.sampler is None:
        state.review.sampler = ReviewBook.new(config.review, state.evaluator.names).sampler
    review = config.review
    wanted = review.neighbours if review.policy != "none" else 0
    kept = getattr(state.review, "neighbours", None)  # absent from older checkpoints' books
    if not wanted:
        state.review.neighbours = None
    elif kept is None or kept.kept != review.neighbours_kept:
        state.review.neighbours = LabelledEvents(
            review.neighbours_kept, kept.events if kept is not None else deque()
        )
    if config.review.budget_per_minute and state.review.bucket is None:
        state.review.bucket = TokenBucket(config.review.budget_per_minute)
