"""The review queue: which request a reviewer sees next, claims, answers and skips.

Requests come from the review-requests topic (a :class:`RequestSource`); who holds which
request lives in Redis, so any number of reviewer processes share one queue:

- ``riverline:{name}:review:claim:{id}``: the reviewer holding the request (``SET NX PX``, so
  two reviewers never get the same one; the TTL hands it on if its reviewer walks away);
- ``riverline:{name}:review:holding:{reviewer}``: the request that reviewer holds (a reload
  shows the same one);
- ``riverline:{name}:review:answered:{id}``: who answered (``SET NX``: one answer per
  request), kept until a while after the request's deadline, so its memory stays bounded;
- ``riverline:{name}:review:skipped:{reviewer}``: what that reviewer skipped (others still
  get it);
- ``riverline:{name}:review:answers`` / ``...:skips``: per-reviewer counts (hashes).

A request past its deadline leaves the queue and can no longer be answered.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from consumers.review.transport import Delivered
from pipeline.config import ValidationConfig
from pipeline.schemas import InvalidRecord, Label, LabelValue, ReviewRequest, encode, proba_key
from pipeline.validation import check_label

DEFAULT_CLAIM_TTL_S = 600.0
# How long an answer is remembered after its request's deadline (or after the answer when the
# request has none): a reviewer process started later skips it while reading the topic again.
ANSWERED_RETENTION_S = 7 * 24 * 3600.0
DEFAULT_MAX_HELD = 10_000


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RequestSource(Protocol):
    @property
    def caught_up(self) -> bool: ...

    def take(self) -> list[Delivered]: ...

    def hold(self, full: bool) -> None: ...


class AnswerSink(Protocol):
    def publish(self, key: bytes, value: bytes, partition: int | None) -> None: ...


class ReviewError(Exception):
    """An answer or skip that cannot be taken; ``status`` is the HTTP status that says why,
    ``reason`` the pipeline's dead-letter code when the pipeline itself would refuse it."""

    def __init__(self, status: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def _typed(text: str) -> LabelValue:
    """A class typed as text: a JSON literal (``true``, ``3``) is that value, else the text.

    >>> _typed("true"), _typed("3"), _typed("spam"), _typed('"3"')
    (True, 3, 'spam', '3')
    """
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, bool | int | float | str) else text


def coerce_answer(
    request: ReviewRequest,
    value: Any,
    new_classes: bool = False,
    allowed: tuple[Any, ...] | None = None,
) -> LabelValue:
    """The label a reviewer's answer stands for, or ``ValueError`` saying why it is not one.

    A class is matched by value or by its text (forms and terminals send text); with
    ``new_classes`` (``review.new_classes``) another class is taken as it is typed:

    >>> r = ReviewRequest(id="1", pipeline="p", ts=0.0, features={}, task="classification",
    ...                   classes=[False, True], mode="label", requested_at=0.0)
    >>> coerce_answer(r, True), coerce_answer(r, "false")
    (True, False)
    >>> coerce_answer(r, "maybe")
    Traceback (most recent call last):
    ...
    ValueError: 'maybe' is not one of the classes: false, true
    >>> coerce_answer(r, "maybe", new_classes=True)
    'maybe'
    >>> g = r.model_copy(update={"task": "regression", "classes": []})
    >>> coerce_answer(g, "2.5")
    2.5

    A number equal to one of the allowed labels (``validation.labels``) is that label, typed as
    the pipeline checks it (the page's number field sends "2" for the label 2, not 2.0):

    >>> coerce_answer(g, "2", allowed=(1, 2, 3)), coerce_answer(g, "2.5", allowed=(1, 2, 3))
    (2, 2.5)
    """
    if request.task == "regression":
        if isinstance(value, bool):
            raise ValueError("the answer must be a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError("the answer must be a finite number")
        for label in allowed or ():
            if isinstance(label, int | float) and not isinstance(label, bool) and label == number:
                return label
        return number
    for cls in request.classes:
        if type(cls) is type(value) and cls == value:
            return cls
    if isinstance(value, str):
        for cls in request.classes:
            if value == proba_key(cls) or value == str(cls):
                return cls
    if new_classes and isinstance(value, bool | int | float | str):
        typed = _typed(value.strip()) if isinstance(value, str) else value
        if typed != "":
            return typed
    names = ", ".join(proba_key(c) for c in request.classes)
    raise ValueError(f"{value!r} is not one of the classes: {names}")


@dataclass(frozen=True)
class Standing:
    """What a reviewer sees besides the request: the queue's length and their own counts."""

    waiting: int
    answered: int
    skipped: int
    caught_up: bool


class ReviewQueue:
    """The requests not yet answered nor past their deadline, shared through Redis claims."""

    def __init__(
        self,
        source: RequestSource,
        sink: AnswerSink,
        client: redis.Redis,
        pipeline: str,
        claim_ttl_s: float = DEFAULT_CLAIM_TTL_S,
        max_held: int = DEFAULT_MAX_HELD,
        clock: Callable[[], float] = time.time,
        validation: ValidationConfig | None = None,
        new_classes: bool = False,
    ) -> None:
        self.source = source
        # The pipeline's own label checks (its validation section), applied before an answer
        # is taken: an answer it would dead-letter must stay answerable, not marked answered.
        self.validation = validation
        self.new_classes = new_classes
        self.sink = sink
        self.client = client
        self.pipeline = pipeline
        self.prefix = f"riverline:{pipeline}:review:"
        self.claim_ttl_ms = max(1, int(claim_ttl_s * 1000))
        self.max_held = max_held
        self.clock = clock
        self.expired = 0
        self.other_pipeline = 0
        self._held: dict[str, Delivered] = {}  # by id, in topic order
        self._lock = threading.Lock()

    def key(self, suffix: str) -> str:
        return self.prefix + suffix

    # -- the queue -------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Take newly read requests; drop the answered and the expired (caller holds the lock)."""
        now = self.clock()
        for delivered in self.source.take():
            request = delivered.request
            if request.pipeline != self.pipeline:
                self.other_pipeline += 1  # a topic shared by pipelines: not this queue's
                continue
            if request.id in self._held:
                continue  # published twice (the pipeline's outputs are at-least-once)
            self._held[request.id] = delivered
        if self._held:
            ids = list(self._held)
            answered = self.client.mget([self.key(f"answered:{i}") for i in ids])
            for request_id, who in zip(ids, answered, strict=True):
                deadline = self._held[request_id].expires_at
                if who is not None:
                    del self._held[request_id]
                elif deadline is not None and deadline <= now:
                    del self._held[request_id]
                    self.expired += 1
        self.source.hold(len(self._held) >= self.max_held)

    def _claim(self, request_id: str, reviewer: str) -> bool:
        claim = self.key(f"claim:{request_id}")
        if self.client.set(claim, reviewer, nx=True, px=self.claim_ttl_ms):
            self.client.set(self.key(f"holding:{reviewer}"), request_id, px=self.claim_ttl_ms)
            return True
        holder = self.client.get(claim)
        if holder is None or _text(holder) != reviewer:
            return False
        # Still looking at it: the claim lasts another TTL from now.
        self.client.pexpire(claim, self.claim_ttl_ms)
        self.client.set(self.key(f"holding:{reviewer}"), request_id, px=self.claim_ttl_ms)
        return True

    def next(self, reviewer: str) -> Delivered | None:
        """The request this reviewer holds, else the first free one (now claimed), else None."""
        with self._lock:
            self._refresh()
            holding = self.client.get(self.key(f"holding:{reviewer}"))
            if holding is not None and _text(holding) in self._held:
                held_id = _text(holding)
                if self._claim(held_id, reviewer):
                    return self._held[held_id]
            skipped = self.client.smembers(self.key(f"skipped:{reviewer}"))
            # The nearest deadline first (a deferred prediction waits on it), then topic order.
            ranked = sorted(
                self._held.items(),
                key=lambda item: (item[1].expires_at is None, item[1].expires_at or 0),
            )
            for request_id, delivered in ranked:
                if request_id.encode() in skipped:
                    continue
                if self._claim(request_id, reviewer):
                    return delivered
            return None

    def standing(self, reviewer: str) -> Standing:
        # Read before taking what arrived: "caught up" then covers everything counted.
        caught_up = self.source.caught_up
        with self._lock:
            self._refresh()
            waiting = len(self._held)
        answered = self.client.hget(self.key("answers"), reviewer)
        skipped = self.client.hget(self.key("skips"), reviewer)
        return Standing(
            waiting=waiting,
            answered=int(answered or 0),
            skipped=int(skipped or 0),
            caught_up=caught_up,
        )

    def live(self, request_id: str) -> Delivered:
        """The request if it still waits for an answer, else :class:`ReviewError` (404/409)."""
        with self._lock:
            self._refresh()
            delivered = self._held.get(request_id)
        if delivered is not None:
            return delivered
        if self.client.exists(self.key(f"answered:{request_id}")):
            raise ReviewError(409, f"request {request_id} was already answered")
        raise ReviewError(404, f"no request {request_id} waits for an answer (unknown or expired)")

    def _take_claim(self, request_id: str, reviewer: str) -> None:
        if not self._claim(request_id, reviewer):
            raise ReviewError(409, f"request {request_id} is claimed by another reviewer")

    def _release(self, request_id: str, reviewer: str) -> None:
        self.client.delete(self.key(f"claim:{request_id}"))
        holding = self.key(f"holding:{reviewer}")
        current = self.client.get(holding)
        if current is not None and _text(current) == request_id:
            self.client.delete(holding)

    # -- answers and skips -----------------------------------------------------------------

    def answer(self, request_id: str, reviewer: str, value: Any) -> Label:
        """Publish the reviewer's answer as a human label; raise :class:`ReviewError` if not."""
        delivered = self.live(request_id)
        request = delivered.request
        try:
            labels = self.validation.labels if self.validation is not None else None
            answer = coerce_answer(request, value, self.new_classes, labels)
        except ValueError as e:
            raise ReviewError(422, str(e)) from None
        now = self.clock()
        # A label's ts is when it became known: the answer time.
        label = Label(
            id=request.id,
            ts=now,
            label=answer,
            source="human",
            reviewer=reviewer,
            answered_at=now,
        )
        if self.validation is not None:
            try:
                check_label(label, self.validation, now, regression=request.task == "regression")
            except InvalidRecord as e:
                message = f"the pipeline would refuse this answer ({e.reason}): {e}"
                raise ReviewError(422, message, e.reason) from None
        self._take_claim(request_id, reviewer)
        keep_until = max(delivered.expires_at or now, now) + ANSWERED_RETENTION_S
        answered_key = self.key(f"answered:{request_id}")
        if not self.client.set(answered_key, reviewer, nx=True, px=int((keep_until - now) * 1000)):
            raise ReviewError(409, f"request {request_id} was already answered")
        key = (request.key if request.key is not None else request.id).encode()
        try:
            self.sink.publish(key, encode(label), delivered.partition)
        except Exception as e:
            self.client.delete(answered_key)  # not delivered: the request stays answerable
            raise ReviewError(503, f"the broker did not take the answer ({e}); try again") from e
        self.client.hincrby(self.key("answers"), reviewer, 1)
        self._release(request_id, reviewer)
        with self._lock:
            self._held.pop(request_id, None)
        return label

    def skip(self, request_id: str, reviewer: str) -> None:
        """Hand the request back: others get it, this reviewer does not see it again."""
        delivered = self.live(request_id)
        self._take_claim(request_id, reviewer)
        skipped = self.key(f"skipped:{reviewer}")
        self.client.sadd(skipped, request_id)
        keep_until = max(delivered.expires_at or 0.0, self.clock()) + ANSWERED_RETENTION_S
        self.client.expireat(skipped, int(keep_until))
        self.client.hincrby(self.key("skips"), reviewer, 1)
        self._release(request_id, reviewer)

    # -- sessions of the web page -----------------------------------------------------------

    def end_session(self, session_id: str, expires: float) -> None:
        """Remember a logged-out session until its cookie would have expired anyway, in Redis:
        every server of the same pipeline refuses the cookie from now on."""
        ttl_ms = int((expires - self.clock()) * 1000)
        if ttl_ms > 0:
            self.client.set(self.key(f"ended:{session_id}"), b"1", px=ttl_ms)

    def session_ended(self, session_id: str) -> bool:
        return bool(self.client.exists(self.key(f"ended:{session_id}")))

    def counts(self) -> dict[str, Any]:
        """Per-reviewer answer and skip counts, for status pages and scripts."""
        answers = self.client.hgetall(self.key("answers"))
        skips = self.client.hgetall(self.key("skips"))
        return {
            "answers": {_text(k): int(v) for k, v in answers.items()},
            "skips": {_text(k): int(v) for k, v in skips.items()},
            "expired_seen": self.expired,
            "other_pipeline_seen": self.other_pipeline,
        }


def request_json(delivered: Delivered) -> dict[str, Any]:
    """A request as the JSON API returns it (with the partition it came from)."""
    data: dict[str, Any] = json.loads(delivered.request.model_dump_json())
    data["partition"] = delivered.partition
    return data
