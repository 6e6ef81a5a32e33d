"""Who may call a route: bearer tokens for scripts, opaque sessions for browsers, and a brake on guessing.

A bearer token is compared with every configured token in constant time. A browser logs in by
POSTing its token to ``/login`` (never in a URL) and gets a cookie holding a random session id;
the server maps that id to the token's scope, so the cookie never carries the token. Writes made
with that cookie must come from this server's own pages (their ``Origin`` or ``Referer``), so
another site cannot make a logged-in browser post data. Each client address gets a limited
number of failed attempts (unknown tokens) per window; past it every attempt from that address
answers 429.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from urllib.parse import urlsplit

from mlsleuth.server._config import AuthSettings, Scope

__all__ = ["SESSION_COOKIE", "Authenticator"]

#: The browser session cookie: a random id, never a token.
SESSION_COOKIE = "mlsleuth_session"

#: Methods that change nothing; other methods with a session cookie need a same-origin request.
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})

#: The clock of session lifetimes and failure windows (a module attribute so that tests can move it).
_clock = time.monotonic

#: How many sessions and client addresses are remembered at most (the oldest are forgotten first).
_MAX_ENTRIES = 10_000

try:
    from fastapi import HTTPException, Request
except ImportError as _exc:  # pragma: no cover - the server extra installs it
    raise ImportError("mlsleuth's server needs fastapi and uvicorn: pip install 'mlsleuth[server]'") from _exc


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


class Authenticator:
    """Checks credentials, keeps browser sessions and counts failed attempts per client.

    Parameters
    ----------
    tokens
        Bearer token -> scope.
    settings
        Session lifetime, cookie security, failed-attempt limit (see
        :class:`~mlsleuth.server.AuthSettings`).
    public_url
        The server's public base URL; its origin is accepted for cookie writes besides the
        request's own ``Host``.
    """

    def __init__(self, tokens: Mapping[str, Scope], settings: AuthSettings, public_url: str = "") -> None:
        self.tokens = dict(tokens)
        self.settings = settings
        self.public_origin = _origin(public_url) if public_url else None
        self._sessions: OrderedDict[str, tuple[Scope, float]] = OrderedDict()
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    # -------------------------------------------------------------------------------- failed attempts

    @staticmethod
    def client(request: Request) -> str:
        """The address failed attempts are counted against."""
        return request.client.host if request.client is not None else "unknown"

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.get(client)
        if times is None:
            return deque()
        while times and times[0] <= now - self.settings.failure_window:
            times.popleft()
        return times

    def throttle(self, request: Request) -> None:
        """429 while the client has used up its failed attempts in the window."""
        now = _clock()
        with self._lock:
            times = self._recent(self.client(request), now)
            if len(times) < self.settings.max_failures:
                return
            wait = max(1, int(times[0] + self.settings.failure_window - now) + 1)
        raise HTTPException(429, f"too many failed authentication attempts from this address; retry in {wait} s",
                            headers={"Retry-After": str(wait)})

    def failed(self, request: Request) -> None:
        """Count one failed attempt of the client."""
        now = _clock()
        client = self.client(request)
        with self._lock:
            times = self._recent(client, now)
            times.append(now)
            self._failures[client] = times
            self._failures.move_to_end(client)
            while len(self._failures) > _MAX_ENTRIES:
                self._failures.popitem(last=False)

    # -------------------------------------------------------------------------------- tokens and sessions

    def token_scope(self, token: str) -> Scope | None:
        """The scope of ``token``, compared with every known token in constant time; ``None`` if unknown."""
        scope = None
        for known, s in self.tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                scope = s
        return scope

    def open_session(self, scope: Scope) -> str:
        """A new random session id for ``scope``, valid for the configured lifetime."""
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[sid] = (scope, _clock() + self.settings.session_seconds)
            while len(self._sessions) > _MAX_ENTRIES:
                self._sessions.popitem(last=False)
        return sid

    def close_session(self, sid: str | None) -> None:
        """Forget a session (logout)."""
        if sid:
            with self._lock:
                self._sessions.pop(sid, None)

    def session_scope(self, sid: str) -> Scope | None:
        """The scope of a live session, ``None`` when unknown or expired."""
        with self._lock:
            entry = self._sessions.get(sid)
            if entry is None:
                return None
            if entry[1] <= _clock():
                del self._sessions[sid]
                return None
            return entry[0]

    def secure_cookie(self, request: Request) -> bool:
        """Whether the session cookie gets ``Secure``: set in the config, else when served over https."""
        if self.settings.cookie_secure is not None:
            return self.settings.cookie_secure
        return request.url.scheme == "https" or (self.public_origin or "").startswith("https://")

    def same_origin(self, request: Request) -> bool:
        """Whether the request comes from this server's own pages (``Origin``, else ``Referer``)."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return False
        claimed = request.headers.get("origin")
        if not claimed or claimed == "null":
            claimed = request.headers.get("referer") or ""
        origin = _origin(claimed)
        if origin is None:
            return False
        own = {_origin(str(request.base_url)), self.public_origin}
        return origin in own

    # -------------------------------------------------------------------------------- the check

    def check(self, request: Request, needed: Scope) -> Scope:
        """The caller's scope, or 401/403/429 saying what is missing."""
        auth = request.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        sid = None if bearer else request.cookies.get(SESSION_COOKIE)
        if not bearer and not sid:
            raise HTTPException(401, "missing bearer token: send 'Authorization: Bearer <token>' (browsers: log in "
                                     "at /login)", headers={"WWW-Authenticate": "Bearer"})
        self.throttle(request)
        if bearer:
            scope = self.token_scope(bearer)
            if scope is None:
                self.failed(request)
                raise HTTPException(401, "unknown bearer token", headers={"WWW-Authenticate": "Bearer"})
        else:
            assert sid is not None
            scope = self.session_scope(sid)
            if scope is None:
                # Not counted as a failure: a 256-bit id cannot be guessed, and a browser whose session
                # expired must not lock itself out by reloading a page.
                raise HTTPException(401, "the session has expired or is unknown: log in again at /login",
                                    headers={"WWW-Authenticate": "Bearer"})
            if request.method not in _SAFE and not self.same_origin(request):
                raise HTTPException(403, "a write with a session cookie must come from this server's pages (the "
                                         "Origin header did not match); scripts send 'Authorization: Bearer <token>'")
        if not scope.allows(needed):
            raise HTTPException(403, f"this token has the {scope.value} scope; {request.url.path} needs "
                                     f"{needed.value}")
        return scope
