"""The learning core's side of humans in the loop: requests out, answers in (no I/O).

A mixin of :class:`pipeline.core.LearningCore`, kept in its own module so the core stays small.

- **On an event** the policy may pick it for review; within ``max_pending`` and the budget a
  :class:`ReviewRequest` goes out. In ``label`` mode the automatic answer (the model's if it
  serves, else the rules', callable's or default's) is served now; in ``defer`` mode it is held.
- **A person's answer** (a label with ``source: human``) is learned from like any label. In
  ``label`` mode a correcting prediction with ``source: human`` goes out for the same id; in
  ``defer`` mode the held event is served with the person's answer.
- **A deadline** (event time) that passes first expires the request; a held event is then served
  the automatic answer with ``deadline_passed: true``.
- **Ground truth and a person's answer for the same event**, whichever comes first:

  - ground truth first: the model is scored on it and learns from it; the person's answer,
    when it comes, is only scored (role ``human``);
  - the person first: the model learned from the answer (it was the best label there was);
    ground truth then scores the person, and the model learns from ground truth as well only
    when it says otherwise (a correction, counted), so a right answer is not learned twice and
    a wrong one does not stand. The model's and the fallback's scores on that event stay those
    against the person's answer: metrics are not rewritten after the fact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.review import (
    _NO_TRUTH,
    Requested,
    ReviewBook,
    ReviewOutput,
    ReviewPolicy,
    merged_classes,
)
from pipeline.schemas import (
    Event,
    Label,
    ModelOpinion,
    Neighbour,
    Prediction,
    ReviewRequest,
    RulesOpinion,
    proba_key,
)

if TYPE_CHECKING:
    from pipeline.core import CoreState, Outcome
    from pipeline.fallback import Answer, Fallback
    from pipeline.serving.serve import Server


class ReviewLoop:
    """Hooks the core calls; ``self.review`` is the policy, ``state.review`` the book."""

    state: CoreState
    review: ReviewPolicy | None
    server: Server
    fallback: Fallback

    @property
    def _book(self) -> ReviewBook:
        book = self.state.review
        assert book is not None
        return book

    def _review_event(
        self, event: Event, x: dict[str, Any], model_pred: Any, answer: Answer, outcome: Outcome
    ) -> None:
        policy = self.review
        prediction = outcome.prediction
        if policy is None or not policy.enabled or prediction is None:
            return
        book = self._book
        if not policy.wants(book, x, model_pred, served_by_model=prediction.source == "model"):
            return
        if not policy.admit(book, event.ts):
            return
        deadline = policy.deadline(event.ts)
        key = event.partition_key
        entry = Requested(event.id, key, event.ts, event.ts, deadline)
        if policy.config.mode == "defer":
            entry.held = prediction
            outcome.prediction = None
            # Counted as served when it is: by a person, or at the deadline.
            self._unserve(prediction.source)
        book.requested[event.id] = entry
        book.counts["sent"] += 1
        has_opinion = model_pred is not None and model_pred != {}
        opinion = None
        if has_opinion:
            by_model = prediction.source == "model"
            explainer = self.server.explainer
            if isinstance(model_pred, dict):
                hard = max(model_pred, key=model_pred.__getitem__)
                confidence = float(model_pred[hard])
                # The reviewer sees why the model says what it says, served or not.
                explanation = prediction.explanation if by_model else None
                if explanation is None and explainer is not None:
                    explanation = explainer.explain_now(
                        self.state.model, x, event.id, hard, confidence
                    )
                opinion = ModelOpinion(
                    prediction=hard,
                    proba=prediction.proba
                    if by_model
                    else {proba_key(k): float(v) for k, v in model_pred.items()},
                    confidence=confidence,
                    model_version=self.state.learned,
                    explanation=explanation,
                )
            else:
                explanation = prediction.explanation if by_model else None
                if explanation is None and explainer is not None:
                    explanation = explainer.explain_now(
                        self.state.model, x, event.id, None, model_pred
                    )
                opinion = ModelOpinion(
                    prediction=model_pred,
                    model_version=self.state.learned,
                    explanation=explanation,
                )
        request = ReviewRequest(
            id=event.id,
            pipeline=policy.pipeline,
            ts=event.ts,
            features=event.features,
            attributes=event.attributes,
            key=event.key,
            task="classification" if policy.classifier else "regression",
            # Known before any label, then the model's, then those seen: never empty for a
            # classifier (config load asks for validation.labels when nothing is known).
            classes=merged_classes(
                policy.classes,
                model_pred if isinstance(model_pred, dict) else (),
                book.classes,
            )
            if policy.classifier
            else [],
            model=opinion,
            rules=RulesOpinion(
                prediction=answer.prediction,
                source=answer.source,  # type: ignore[arg-type]
                confidence=answer.confidence,
                rule=self.fallback.rule_for(x) if answer.source == "heuristic" else None,
            ),
            neighbours=self._neighbours(x, policy.config.neighbours),
            mode=policy.config.mode,
            requested_at=event.ts,
            deadline=deadline,
        )
        outcome.add_review(ReviewOutput(key, request))

    def _neighbours(self, x: dict[str, Any], k: int) -> list[Neighbour]:
        """The most similar recently labelled events (none when review.neighbours is 0)."""
        labelled = self._book.neighbours
        if labelled is None or k <= 0:
            return []
        return [Neighbour(**found) for found in labelled.nearest(x, k)]

    def _unserve(self, source: str) -> None:
        served = self.state.served_by
        served[source] -= 1
        if served[source] <= 0:
            del served[source]

    def _human_prediction(self, entry: Requested, label: Label) -> Prediction:
        return Prediction(
            id=entry.id,
            ts=entry.ts,
            prediction=label.label,
            source="human",
            model_version=self.state.learned,
            confidence=None,
            mode=self.state.gating.mode,
            reviewer=label.reviewer,
        )

    def _review_label(self, label: Label, outcome: Outcome) -> bool:
        """Book-keeping for a label; True when the core must not join or learn from it."""
        book = self.state.review
        if book is None:
            return False
        if label.source == "ground_truth":
            if label.id in book.awaiting_truth:
                self._truth_after_person(label, outcome)
                return True
            entry = book.requested.get(label.id)
            if entry is not None and entry.truth is _NO_TRUTH:
                entry.truth = label.label  # scores the person's answer when it comes
            return False
        entry = book.requested.pop(label.id, None)
        if entry is None:
            # An answer past its deadline, or to a request this pipeline never made: still a
            # label (learned if its event waits for one), but not an answer to serve.
            book.counts["late_answers"] += 1
            return False
        book.counts["answered"] += 1
        if label.answered_at is not None:
            book.time_to_answer.update(max(0.0, label.answered_at - entry.requested_at))
        served = self._human_prediction(entry, label)
        if entry.held is not None:
            book.counts["served_human"] += 1
            self.state.served_by["human"] += 1
            outcome.add_review(ReviewOutput(entry.key, served))
        else:
            # Label mode: the person's answer supersedes what was served (downstream keeps the
            # latest prediction per id).
            outcome.add_review(ReviewOutput(entry.key, served))
        if entry.truth is not _NO_TRUTH:
            book.human.update(entry.truth, label.label)
            book.counts["answers_after_truth"] += 1
            return True  # ground truth came first: it taught the model already
        join = self.state.join
        if label.id not in join.pending:
            book.counts["answers_unjoined"] += 1  # the event left the join buffer (TTL)
            return True
        return False

    def _truth_after_person(self, label: Label, outcome: Outcome) -> None:
        state = self.state
        book = self._book
        waiting = book.awaiting_truth.pop(label.id)
        book.human.update(label.label, waiting.answer)
        if waiting.answer == label.label:
            return
        model: Any = state.model
        try:
            model.learn_one(waiting.x, label.label)
            state.learned += 1  # learned like any label: the model's version counts it
        except Exception as e:
            state.model_errors += 1
            state.dead_letters["model_error"] += 1
            from pipeline.core import Rejection

            outcome.reject(
                Rejection("model_error", f"learn_one raised {type(e).__name__}: {e}", None)
            )
        challengers = state.challengers
        if challengers is not None:
            challengers.teach(waiting.x, label.label)  # what the champion learns, they learn
        state.labels += 1
        book.learned_by_source["ground_truth"] += 1
        book.counts["corrections"] += 1
        outcome.learned = True

    def _review_tick(self, outcome: Outcome) -> None:
        """Expire requests whose deadline the watermark passed; serve what they held."""
        book = self.state.review
        if book is None or not book.requested:
            return
        now = self.state.watermark
        # Requests leave in the order they were made (deadlines are event time + a constant).
        while book.requested:
            entry = next(iter(book.requested.values()))
            if entry.deadline is None or entry.deadline > now:
                break
            book.requested.popitem(last=False)
            book.counts["expired"] += 1
            if entry.held is not None:
                held = entry.held.model_copy(update={"deadline_passed": True})
                book.counts["served_deadline"] += 1
                self.state.served_by[held.source] += 1
                outcome.add_review(ReviewOutput(entry.key, held))
