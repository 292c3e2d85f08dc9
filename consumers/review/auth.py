"""Who may review: a shared token, signed session cookies, and CSRF checks for form posts.

A browser logs in once with the token (and a reviewer name) and gets a session cookie signed
with a key derived from that token (changing the token logs everyone out); the cookie also
carries a per-session CSRF token that every form post must echo. Scripts send the token as
``Authorization: Bearer ...`` instead and need no session.

>>> keys = SessionKeys(b"secret")
>>> cookie = keys.issue("ana", now=100.0)
>>> keys.read(cookie, now=200.0).reviewer
'ana'
>>> keys.read(cookie + "x", now=200.0) is None, keys.read(cookie, now=1e9) is None
(True, True)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
from dataclasses import dataclass

SESSION_COOKIE = "riverline_review"
SESSION_TTL_S = 12 * 3600.0


@dataclass(frozen=True)
class Session:
    reviewer: str
    csrf: str
    expires: float


class SessionKeys:
    """Issues and checks signed session cookies (nothing is stored on the server)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def for_token(cls, token: str | None) -> SessionKeys:
        if token is None:  # --no-auth: sessions only carry the name, for this process's life
            return cls(secrets.token_bytes(32))
        return cls(hmac.new(token.encode(), b"riverline-review-session", "sha256").digest())

    def _mac(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self, reviewer: str, now: float, ttl_s: float = SESSION_TTL_S) -> str:
        body = {"r": reviewer, "c": secrets.token_urlsafe(24), "e": now + ttl_s}
        payload = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
        return f"{payload}.{self._mac(payload)}"

    def read(self, cookie: str | None, now: float) -> Session | None:
        if not cookie or "." not in cookie:
            return None
        payload, mac = cookie.rsplit(".", 1)
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            session = Session(str(body["r"]), str(body["c"]), float(body["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > now else None


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison, so the token cannot be guessed byte by byte."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header.

    >>> bearer("Bearer abc"), bearer("Basic abc"), bearer(None)
    ('abc', None, None)
    """
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def same_origin(own: str, origin: str | None, referer: str | None) -> bool:
    """A post is same-site when its Origin (or, lacking one, its Referer) is this server.

    >>> same_origin("http://h:8080", "http://h:8080", None)
    True
    >>> same_origin("http://h:8080", "https://evil.example", None)
    False
    >>> same_origin("http://h:8080", None, "http://h:8080/?x=1")
    True
    >>> same_origin("http://h:8080", "null", None)
    False
    """
    if origin is not None:
        return origin == own
    if referer is not None:
        return referer == own or referer.startswith(own + "/")
    return True  # not a browser (browsers send Origin on POST); the CSRF token still applies


def is_loopback(host: str) -> bool:
    """
    >>> [is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "0.0.0.0")]
    [True, True, True, False]
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
