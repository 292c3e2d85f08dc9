"""Promoting a challenger by hand: a request in Redis, applied by the writer between two
checkpoints, so a crash at any point resumes to the same state.

``riverline promote`` sets ``{prefix}promote`` to ``{"challenger", "id"}``. The writer (``run``
or ``learner``) reads it every few seconds; it first checkpoints, then promotes, then
checkpoints again, and only then answers (``{prefix}promote:result``) and removes the request.
Killed in between, it resumes from the first checkpoint with the request still there and does
the same again; killed after the second, the state remembers the request's id and does not
promote twice.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

REQUEST = "promote"
RESULT = "promote:result"
RESULT_TTL_S = 3600


def request(store: Any, challenger: str) -> str:
    """Ask the pipeline's writer to promote ``challenger``; returns the request's id."""
    request_id = uuid.uuid4().hex
    store.client.set(store.key(REQUEST), json.dumps({"challenger": challenger, "id": request_id}))
    return request_id


def pending(store: Any) -> dict[str, str] | None:
    """The request waiting, if any (an unreadable one is dropped: nobody can apply it)."""
    raw = store.client.get(store.key(REQUEST))
    if raw is None:
        return None
    try:
        found = json.loads(raw)
        if isinstance(found.get("challenger"), str) and isinstance(found.get("id"), str):
            return {"challenger": found["challenger"], "id": found["id"]}
    except (ValueError, AttributeError):
        pass
    store.client.delete(store.key(REQUEST))
    return None


def answer(store: Any, request_id: str, applied: bool, message: str) -> None:
    """The writer's answer; the request goes unless a newer one replaced it meanwhile."""
    pipe = store.client.pipeline(transaction=True)
    pipe.set(
        store.key(RESULT),
        json.dumps({"id": request_id, "applied": applied, "message": message}),
        ex=RESULT_TTL_S,
    )
    pipe.execute()
    current = pending(store)
    if current is not None and current["id"] == request_id:
        store.client.delete(store.key(REQUEST))


def result(store: Any, request_id: str) -> dict[str, Any] | None:
    """The writer's answer to request ``request_id``, once there is one."""
    raw = store.client.get(store.key(RESULT))
    if raw is None:
        return None
    found = json.loads(raw)
    return found if found.get("id") == request_id else None
