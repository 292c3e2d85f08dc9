"""The review app against hostile clients (issue 18, point 8), served by uvicorn against the real
broker and Redis: bodies are capped while they stream, --no-auth answers loopback host names
only, a logged-out cookie is dead, the page shows fixed messages only, guessing the token is
throttled, a weak token is refused off loopback, bidi controls are isolated and shown, and every
answer carries the security headers."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from tests.integration.helpers import write_config
from tests.integration.review_support import (
    TOKEN,
    Served,
    api,
    call,
    make_request,
    next_request,
    publish_requests,
    served_app,
)

pytestmark = pytest.mark.integration

FORM = "application/x-www-form-urlencoded"


def _login(served: Served, reviewer: str, token: str) -> Any:
    return call(
        "POST",
        served.url + "/login",
        {"Content-Type": FORM, "Origin": served.url},
        urlencode({"reviewer": reviewer, "token": token}).encode(),
    )


def _cookie(reply: Any) -> str:
    return str(reply.headers["set-cookie"].split(";")[0])


def _raw(served: Served, head: bytes, body: bytes = b"") -> bytes:
    """Send a request by hand (a declared or chunked body the client never finishes) and read
    what the server answers; a server that waits for the rest of the body answers nothing."""
    parts = urlsplit(served.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=15) as conn:
        conn.sendall(head + body)
        try:
            return conn.recv(65536)
        except TimeoutError:
            return b"(no answer)"


def test_a_body_over_the_cap_is_refused_while_it_streams(make_config: Any) -> None:
    cfg = make_config()
    with served_app(cfg) as served:
        # Declared too large: refused before a byte of it is read.
        declared = _raw(
            served,
            b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 300000000\r\n\r\n",
        )
        assert declared.startswith(b"HTTP/1.1 413"), declared
        # Chunked, no length: refused once 64 KB went by, the rest never sent.
        chunk = b"a" * 100_000
        chunked = _raw(
            served,
            b"POST /api/answer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n".encode()
            + b"Transfer-Encoding: chunked\r\n\r\n",
            b"%x\r\n%s\r\n" % (len(chunk), chunk),
        )
        assert chunked.startswith(b"HTTP/1.1 413"), chunked
        # A form of ordinary size still logs in.
        assert _login(served, "ana", TOKEN).status == 303


def test_without_auth_only_loopback_host_names_are_answered(make_config: Any) -> None:
    cfg = make_config()
    publish_requests(cfg, [make_request(cfg, "h1")])
    with served_app(cfg, token=None) as served:
        port = urlsplit(served.url).port
        # DNS rebinding: the attacker's name now points at 127.0.0.1, the Host header says so.
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example"):
            reply = call("GET", served.url + "/api/next", {"Host": host, "X-Reviewer": "x"})
            assert reply.status == 400, (host, reply.status)
            posted = call(
                "POST",
                served.url + "/api/answer",
                {"Host": host, "Content-Type": "application/json", "X-Reviewer": "x"},
                b'{"id": "h1", "label": true}',
            )
            assert posted.status == 400, (host, posted.status)
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"):
            reply = call("GET", served.url + "/api/next", {"Host": host, "X-Reviewer": "x"})
            assert reply.status == 200, (host, reply.status)


def test_a_logged_out_session_is_dead_on_the_server(make_config: Any) -> None:
    cfg = make_config()
    publish_requests(cfg, [make_request(cfg, "l1")])
    with served_app(cfg) as served:
        cookie = _cookie(_login(served, "lea", TOKEN))
        page = call("GET", served.url + "/", {"Cookie": cookie})
        assert page.status == 200
        csrf = re.search(rb'name="csrf" value="([^"]+)"', page.body).group(1)  # type: ignore[union-attr]
        out = call(
            "POST",
            served.url + "/logout",
            {"Cookie": cookie, "Content-Type": FORM, "Origin": served.url},
            b"csrf=" + csrf,
        )
        assert out.status == 303
        # The same cookie, kept by whoever copied it: no session any more.
        again = call("GET", served.url + "/", {"Cookie": cookie})
        assert again.status == 303 and again.headers["location"] == "/login"
        posted = call(
            "POST",
            served.url + "/skip",
            {"Cookie": cookie, "Content-Type": FORM, "Origin": served.url},
            urlencode({"id": "l1", "csrf": csrf.decode()}).encode(),
        )
        assert posted.status == 401
        # Logging in again gives a new, live session.
        fresh = _cookie(_login(served, "lea", TOKEN))
        assert call("GET", served.url + "/", {"Cookie": fresh}).status == 200


def test_the_page_shows_fixed_messages_only(make_config: Any) -> None:
    cfg = make_config()
    with served_app(cfg) as served:
        cookie = _cookie(_login(served, "ina", TOKEN))
        forged = "Your token expired: call +1 555 0100 and read it out"
        for field in ("error", "notice"):
            page = call("GET", served.url + "/?" + urlencode({field: forged}), {"Cookie": cookie})
            assert page.status == 200
            assert b"call +1 555" not in page.body and b'class="notice' not in page.body
        known = call("GET", served.url + "/?error=taken", {"Cookie": cookie}).body.decode()
        assert '<div class="notice error">' in known


def test_guessing_the_token_is_throttled_per_client(make_config: Any) -> None:
    cfg = make_config()
    with served_app(cfg) as served:
        for _ in range(5):
            assert _login(served, "eve", "guess").status == 401
        throttled = _login(served, "eve", "guess")
        assert throttled.status == 429
        assert 0 < int(throttled.headers["retry-after"]) <= 60
        # Even the right token waits: guessing on until it works must not pay off.
        assert _login(served, "eve", TOKEN).status == 429
        # The bearer token of the API is the same secret: throttled alike.
        blocked = api(served, "GET", "/api/next", token="guess")
        assert blocked.status == 429 and "retry-after" in blocked.headers


def test_a_weak_token_is_refused_off_loopback(
    make_config: Any, backends: Any, tmp_path: Path
) -> None:
    from tests.integration.cli import cli_env, riverline

    config_file = write_config(make_config(), tmp_path / "review.yaml")
    env = cli_env(
        RIVERLINE_REDIS_URL=backends.redis,
        RIVERLINE_KAFKA_BOOTSTRAP=backends.kafka,
        RIVERLINE_REVIEW_TOKEN="x",
    )
    args = ["review", "--web", "--host", "0.0.0.0", "--port", "0", "--config", str(config_file)]
    done = riverline(args, env, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "RIVERLINE_REVIEW_TOKEN" in done.stderr and "16" in done.stderr
    assert "Traceback" not in done.stderr


def test_bidi_controls_are_isolated_and_shown_and_headers_are_set(make_config: Any) -> None:
    cfg = make_config()
    trick = "x5\u202egnp.exe\u202c"
    request = make_request(cfg, trick).model_copy(
        update={"features": {"file": trick, trick: 1.0}, "attributes": {"who": "\u2067ab"}}
    )
    publish_requests(cfg, [request])
    with served_app(cfg) as served:
        login = call("GET", served.url + "/login")
        cookie = _cookie(_login(served, "bo", TOKEN))
        assert next_request(served, "bo") is not None  # read the topic, claimed for bo
        page = call("GET", served.url + "/", {"Cookie": cookie})
        text = page.body.decode()
        # The answer still names the request by its real id (a hidden field, never shown)...
        hidden = f'name="id" value="{trick}"'
        assert hidden in text
        # ...and everything shown has the controls visible and isolated.
        shown = text.replace(hidden, "")
        assert "\u202e" not in shown and "\u2067" not in shown
        assert "<bdi>x5\\u202egnp.exe\\u202c</bdi>" in shown
        assert "<bdi>\\u2067ab</bdi>" in shown
        for reply in (login, page, api(served, "GET", "/api/stats")):
            headers = reply.headers
            csp = headers["content-security-policy"]
            assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
            assert headers["x-frame-options"] == "DENY"
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["referrer-policy"] == "same-origin"
