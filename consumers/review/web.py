"""``riverline review --web``: the review queue as a small Starlette app.

Starlette rather than FastAPI: the app is a handful of routes rendering HTML and small JSON
bodies that pydantic (already a dependency) validates; FastAPI's dependency injection and
OpenAPI pages would add a layer and a dependency for nothing here, and FastAPI is built on
Starlette anyway. Blocking work (Redis, the acknowledged send) runs in Starlette's threadpool.

Routes: ``GET /`` (the page), ``GET|POST /login``, ``POST /logout``, ``POST /answer``,
``POST /skip`` (forms: session cookie + CSRF token + same-origin check) and, for scripts,
``GET /api/next``, ``POST /api/answer``, ``POST /api/skip``, ``GET /api/stats``
(``Authorization: Bearer <token>``, the reviewer named by the ``X-Reviewer`` header).

Against hostile clients (see :class:`Guard`): every body is capped while it streams, every
answer carries a Content-Security-Policy and anti-framing headers, ``--no-auth`` answers
loopback host names only (DNS rebinding), wrong tokens are throttled per client, and a
logged-out session is remembered as ended in Redis until its cookie would have expired.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consumers.review.auth import (
    SESSION_COOKIE,
    SESSION_TTL_S,
    LoginThrottle,
    Session,
    SessionKeys,
    bearer,
    loopback_host,
    same_origin,
    token_matches,
)
from consumers.review.page import CONTENT_SECURITY_POLICY, login_page, review_page
from consumers.review.queue import ReviewError, ReviewQueue, request_json

MAX_NAME = 200
DEFAULT_API_REVIEWER = "api"
# The largest body the app reads: a login form or an answer is a few hundred bytes.
MAX_BODY_BYTES = 64 * 1024
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    # Not no-referrer: browsers then send "Origin: null" on form posts, which the
    # same-origin check refuses.
    (b"referrer-policy", b"same-origin"),
]
# A failed answer, by ReviewError status, as one of the page's fixed messages.
ERROR_CODES = {404: "gone", 409: "taken", 422: "not_an_answer", 503: "broker"}


class _BodyTooLarge(Exception):
    """Raised from ``receive`` once a body streams past the cap; :class:`Guard` answers 413."""


class Guard:
    """ASGI middleware in front of every route: the security headers on every answer, the
    Host check of ``--no-auth``, and the body cap, enforced on the declared length first and
    then while the body streams in (a chunked body has none), so nothing over the cap is ever
    held in memory."""

    def __init__(self, app: ASGIApp, loopback_only: bool, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.loopback_only = loopback_only
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_secured(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        headers = Headers(scope=scope)
        if self.loopback_only and not loopback_host(headers.get("host")):
            refused = PlainTextResponse(
                "unknown Host: without a token this app answers loopback names only "
                "(localhost, 127.0.0.1, [::1])",
                status_code=400,
            )
            await refused(scope, receive, send_secured)
            return
        too_large = PlainTextResponse(
            f"request body over {self.max_body} bytes",
            status_code=413,
            headers={"Connection": "close"},
        )
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            await too_large(scope, receive, send_secured)
            return
        seen = 0

        async def capped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, capped, send_secured)
        except _BodyTooLarge:
            if started:
                raise
            await too_large(scope, receive, send_secured)


def _client(request: Request) -> str:
    # Behind a reverse proxy every client is the proxy: the throttle then counts them together.
    return request.client.host if request.client is not None else "?"


def _own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"


def _cross_site(request: Request) -> bool:
    return not same_origin(
        _own_origin(request), request.headers.get("origin"), request.headers.get("referer")
    )


async def _form(request: Request) -> dict[str, str]:
    """URL-encoded form fields (no multipart: the page never uploads files)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _reviewer_name(raw: str | None) -> str | None:
    name = (raw or "").strip()
    return name if 0 < len(name) <= MAX_NAME and name.isprintable() else None


def create_app(queue: ReviewQueue, token: str | None, secure_cookies: bool = False) -> Starlette:
    """The app; ``token=None`` means no authentication (the CLI allows it on loopback only)."""
    keys = SessionKeys.for_token(token)
    pipeline = queue.pipeline
    throttle = LoginThrottle()

    async def session_of(request: Request) -> Session | None:
        session = keys.read(request.cookies.get(SESSION_COOKIE), time.time())
        if session is None or await run_in_threadpool(queue.session_ended, session.id):
            return None  # a logged-out cookie, kept by someone, is no session
        return session

    def throttled(request: Request) -> int | None:
        """Seconds this client must wait after too many wrong tokens (None: it may try)."""
        return throttle.retry_after(_client(request), time.monotonic()) if token else None

    def wrong_token(request: Request) -> None:
        throttle.failed(_client(request), time.monotonic())

    # -- the page ------------------------------------------------------------------------

    async def render(
        session: Session,
        notice: str | None = None,
        error: str | None = None,
        detail: str | None = None,
        status_code: int = 200,
    ) -> Response:
        delivered = await run_in_threadpool(queue.next, session.reviewer)
        standing = await run_in_threadpool(queue.standing, session.reviewer)
        html = review_page(
            pipeline,
            session.reviewer,
            standing,
            session.csrf,
            delivered,
            notice=notice,
            error=error,
            allowed=queue.validation.labels if queue.validation is not None else None,
            new_classes=queue.new_classes,
            detail=detail,
        )
        return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})

    async def page(request: Request) -> Response:
        session = await session_of(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        # Codes only from the query string: the page shows its own words for them.
        params = request.query_params
        return await render(session, notice=params.get("notice"), error=params.get("error"))

    async def login_form(request: Request) -> Response:
        return HTMLResponse(login_page(pipeline, token is not None))

    async def login(request: Request) -> Response:
        if _cross_site(request):
            return HTMLResponse("cross-site request refused", status_code=403)
        if wait := throttled(request):
            html = login_page(pipeline, True, f"Too many wrong tokens: try again in {wait} s.")
            return HTMLResponse(html, status_code=429, headers={"Retry-After": str(wait)})
        form = await _form(request)
        name = _reviewer_name(form.get("reviewer"))
        if name is None:
            html = login_page(pipeline, token is not None, "Give your name (up to 200 characters).")
            return HTMLResponse(html, status_code=400)
        if token is not None and not token_matches(token, form.get("token")):
            wrong_token(request)
            html = login_page(pipeline, True, "Wrong access token.", name)
            return HTMLResponse(html, status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            keys.issue(name, time.time()),
            max_age=int(SESSION_TTL_S),
            httponly=True,
            samesite="strict",
            secure=secure_cookies,
        )
        return response

    async def form_session(request: Request) -> tuple[Session, dict[str, str]] | Response:
        """The session of a form post whose CSRF token and origin check out, else a refusal."""
        session = await session_of(request)
        if session is None:
            return HTMLResponse("log in first", status_code=401)
        form = await _form(request)
        if _cross_site(request) or not token_matches(session.csrf, form.get("csrf")):
            return HTMLResponse("cross-site request refused", status_code=403)
        return session, form

    async def logout(request: Request) -> Response:
        checked = await form_session(request)
        if isinstance(checked, Response):
            return checked
        await run_in_threadpool(queue.end_session, checked[0].id, checked[0].expires)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    def back(notice: str | None = None, error: str | None = None) -> Response:
        """To the page with a message code (page.NOTICES, page.ERRORS), never free text."""
        query = f"?notice={quote(notice)}" if notice else f"?error={quote(error)}" if error else ""
        return RedirectResponse("/" + query, status_code=303)

    async def answer_form(request: Request) -> Response:
        checked = await form_session(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        request_id = form.get("id", "")
        value: Any = form.get("value")
        try:
            if "choice" in form:
                # A button sends the class's index: the class itself may be a number or a bool.
                delivered = await run_in_threadpool(queue.live, request_id)
                try:
                    value = delivered.request.classes[int(form["choice"])]
                except (ValueError, IndexError):
                    return back(error="no_class")
            await run_in_threadpool(queue.answer, request_id, session.reviewer, value)
        except ReviewError as e:
            if e.reason is not None:
                # The pipeline's refusal (validation): the page again, the same request still
                # answerable, with the reason in the server's words (never through the URL).
                return await render(session, error="not_an_answer", detail=str(e), status_code=422)
            return back(error=ERROR_CODES.get(e.status, "gone"))
        return back(notice="saved")

    async def skip_form(request: Request) -> Response:
        checked = await form_session(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        request_id = form.get("id", "")
        try:
            await run_in_threadpool(queue.skip, request_id, session.reviewer)
        except ReviewError as e:
            return back(error=ERROR_CODES.get(e.status, "gone"))
        return back(notice="skipped")

    # -- the JSON API --------------------------------------------------------------------

    def api(
        handler: Callable[[Request, str], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def checked(request: Request) -> Response:
            if wait := throttled(request):
                return JSONResponse(
                    {"error": f"too many wrong tokens: try again in {wait} s"},
                    status_code=429,
                    headers={"Retry-After": str(wait)},
                )
            given = bearer(request.headers.get("authorization"))
            if token is not None and not token_matches(token, given):
                if given is not None:  # a guess; a request without a token is none
                    wrong_token(request)
                return JSONResponse(
                    {"error": "a valid bearer token is required"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            if request.method == "POST":
                # JSON only: a cross-site page cannot send it without a CORS preflight we
                # never grant, and a browser's Origin must be ours.
                kind = request.headers.get("content-type", "").split(";")[0].strip()
                if kind != "application/json" or _cross_site(request):
                    return JSONResponse({"error": "cross-site request refused"}, status_code=403)
            name = _reviewer_name(request.headers.get("x-reviewer", DEFAULT_API_REVIEWER))
            if name is None:
                return JSONResponse({"error": "X-Reviewer: up to 200 characters"}, 400)
            return await handler(request, name)

        return checked

    async def body_of(request: Request) -> dict[str, Any] | Response:
        try:
            data = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            return JSONResponse({"error": "expected an object with a string id"}, 400)
        return data

    async def api_next(request: Request, reviewer: str) -> Response:
        # Read first: "caught up" and no request then means nothing is left for this reviewer.
        caught_up = queue.source.caught_up
        delivered = await run_in_threadpool(queue.next, reviewer)
        standing = await run_in_threadpool(queue.standing, reviewer)
        return JSONResponse(
            {
                "request": request_json(delivered) if delivered is not None else None,
                "waiting": standing.waiting,
                "caught_up": caught_up,
                "answered": standing.answered,
                "skipped": standing.skipped,
            }
        )

    async def api_answer(request: Request, reviewer: str) -> Response:
        data = await body_of(request)
        if isinstance(data, Response):
            return data
        if "label" not in data:
            return JSONResponse({"error": "expected a label"}, status_code=400)
        try:
            label = await run_in_threadpool(queue.answer, data["id"], reviewer, data["label"])
        except ReviewError as e:
            refusal = {"error": str(e)} | ({"reason": e.reason} if e.reason else {})
            return JSONResponse(refusal, status_code=e.status)
        return JSONResponse({"label": json.loads(label.model_dump_json())})

    async def api_skip(request: Request, reviewer: str) -> Response:
        data = await body_of(request)
        if isinstance(data, Response):
            return data
        try:
            await run_in_threadpool(queue.skip, data["id"], reviewer)
        except ReviewError as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)
        return JSONResponse({"skipped": data["id"]})

    async def api_stats(request: Request, reviewer: str) -> Response:
        standing = await run_in_threadpool(queue.standing, reviewer)
        counts = await run_in_threadpool(queue.counts)
        return JSONResponse(
            {"waiting": standing.waiting, "caught_up": standing.caught_up, **counts}
        )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/answer", answer_form, methods=["POST"]),
        Route("/skip", skip_form, methods=["POST"]),
        Route("/api/next", api(api_next), methods=["GET"]),
        Route("/api/answer", api(api_answer), methods=["POST"]),
        Route("/api/skip", api(api_skip), methods=["POST"]),
        Route("/api/stats", api(api_stats), methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(Guard, loopback_only=token is None)])
