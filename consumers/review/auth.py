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
import math
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass

SESSION_COOKIE = "riverline_review"
SESSION_TTL_S = 12 * 3600.0
# Off loopback the token is all that stands between the network and the labels topic.
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class Session:
    reviewer: str
    csrf: str
    expires: float

    @property
    def id(self) -> str:
        """What the server remembers of an ended session: a digest of its random CSRF token
        (unique per login), not the token itself."""
        return hashlib.sha256(self.csrf.encode()).hexdigest()


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


def loopback_host(host_header: str | None) -> bool:
    """Whether a Host header names this machine's loopback (``--no-auth`` answers no other
    name: a DNS-rebound ``evil.example`` pointing at 127.0.0.1 still says ``evil.example``).

    >>> [loopback_host(h) for h in ("127.0.0.1:8080", "localhost", "[::1]:80", "127.0.0.2")]
    [True, True, True, True]
    >>> [loopback_host(h) for h in ("evil.example", "127.0.0.1.evil.example", "", None, "[::1")]
    [False, False, False, False, False]
    """
    host = (host_header or "").strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end < 0 or (host[end + 1 :] and not host[end + 1 :].startswith(":")):
            return False
        name = host[1:end]
    else:
        name = host.rpartition(":")[0] if ":" in host else host
    return bool(name) and is_loopback(name.rstrip("."))


def weak_token(token: str) -> str | None:
    """Why a token is too weak to guard a page off loopback, or None.

    >>> weak_token("x")
    'is 1 characters long; use at least 16 (e.g. python -c "import secrets; ...")'
    >>> weak_token("a" * 20) is not None, weak_token("review-test-token-0123456789") is None
    (True, True)
    """
    hint = 'e.g. python -c "import secrets; print(secrets.token_urlsafe(24))"'
    if len(token) < MIN_TOKEN_LENGTH:
        return f"is {len(token)} characters long; use at least {MIN_TOKEN_LENGTH} ({hint})"
    if len(set(token)) < 6:
        return f"has fewer than 6 distinct characters ({hint})"
    return None


class LoginThrottle:
    """Wrong tokens per client: after ``max_failures`` within ``window_s`` the client waits
    until the oldest of them is ``window_s`` old, right token or not (guessing on until one
    works must not pay). Memory is bounded: the least recently failing clients are forgotten
    past ``max_clients``. No I/O; the caller passes the clock.

    >>> throttle = LoginThrottle(max_failures=2, window_s=60)
    >>> throttle.failed("a", 0.0); throttle.failed("a", 10.0)
    >>> throttle.retry_after("a", 20.0), throttle.retry_after("b", 20.0)
    (40, None)
    >>> throttle.retry_after("a", 60.5) is None
    True
    """

    def __init__(
        self, max_failures: int = 5, window_s: float = 60.0, max_clients: int = 10_000
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_clients = max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, client: str, now: float) -> deque[float] | None:
        times = self._failures.get(client)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[client]
            return None
        return times

    def retry_after(self, client: str, now: float) -> int | None:
        """Seconds (rounded up) before this client may try again, None if it may now."""
        times = self._recent(client, now)
        if times is None or len(times) < self.max_failures:
            return None
        return max(1, math.ceil(times[0] + self.window_s - now))

    def failed(self, client: str, now: float) -> None:
        times = self._recent(client, now) or deque(maxlen=self.max_failures)
        times.append(now)
        self._failures[client] = times
        self._failures.move_to_end(client)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)
