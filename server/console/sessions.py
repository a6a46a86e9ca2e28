"""Console sessions: kept by the server, named by a random cookie, ended by logout, idleness or age.

A session is opened by the login form with an API key (or an OIDC access token) checked exactly
as the REST API checks it (:func:`server.api.deps.verify_secret`).  The browser holds only a
random 256-bit token in an HttpOnly, SameSite=Strict cookie limited to ``/console`` (Secure over
HTTPS); the server keeps what the token stands for, under its SHA-256, so that neither a memory
dump nor a log line of the store gives a usable cookie.  Each session has its own CSRF token,
which every console form carries and every POST must present (:mod:`server.console.auth`).

Sessions live in the memory of the API process (one per installation, ``lungcds serve``): a
restart logs everybody out, which costs a login and keeps no session state on disk.  A session
ends after ``LUNGCDS_CONSOLE_SESSION_MINUTES`` without a request, after :data:`MAX_LIFETIME` in
any case, when its token expires (OIDC), and at once when its API key is revoked (checked at
each request by :mod:`server.console.auth`).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from server.api.deps import Principal
from server.db_models import utcnow

__all__ = [
    "LOGIN_COOKIE",
    "MAX_LIFETIME",
    "SESSION_COOKIE",
    "ConsoleSession",
    "Notice",
    "SessionStore",
    "new_token",
]

#: The cookie naming a session (path ``/console``).
SESSION_COOKIE = "lungcds_console"
#: The cookie of the login form's double-submitted token (path ``/console/login``).
LOGIN_COOKIE = "lungcds_console_login"
#: No session lasts longer, however active: a forgotten workstation logs out within a shift.
MAX_LIFETIME = timedelta(hours=12)
#: Most sessions kept at once; opening one more ends the one idle longest.
MAX_SESSIONS = 1000


def new_token() -> str:
    """A random 256-bit token, URL-safe (session cookies, CSRF tokens)."""
    return secrets.token_urlsafe(32)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Notice:
    """A message for the next page a session sees: what an action did (``ok``) or why it did nothing."""

    text: str
    ok: bool = True


@dataclass
class ConsoleSession:
    """Who is logged in, their role, the session's CSRF token and how long it lasts.

    Attributes
    ----------
    actor : str
        ``apikey:<id>`` or ``oidc:<subject>``, as the REST API names callers in the audit trail.
    role : str
        ``admin`` or ``viewer``, from the key (or the token's role claim).
    csrf_token : str
        Every form of this session carries it; a POST without it is refused.
    key_id : int or None
        The API key the session was opened with (checked for revocation at each request).
    expires_at : datetime
        The end of the session whatever happens: :data:`MAX_LIFETIME` after login, or the token's expiry.
    last_seen : datetime
        The last request; the session ends when it is older than the idle limit.
    notices : list of Notice
        Messages for the next page.
    """

    actor: str
    role: str
    csrf_token: str
    key_id: int | None
    expires_at: datetime
    last_seen: datetime
    notices: list[Notice] = field(default_factory=list)

    @property
    def is_admin(self) -> bool:
        """True for the admin role: the console shows and allows admin actions."""
        return self.role == "admin"

    def take_notices(self) -> list[Notice]:
        """The notices waiting for the next page, now shown (and forgotten)."""
        taken, self.notices = self.notices, []
        return taken


class SessionStore:
    """The open console sessions of one API process (thread-safe: routes run in worker threads).

    Parameters
    ----------
    idle : timedelta
        A session ends after this long without a request.
    lifetime : timedelta
        A session ends this long after login whatever happens.
    clock : callable
        The time now (UTC); tests pass their own.
    """

    def __init__(
        self, idle: timedelta, lifetime: timedelta = MAX_LIFETIME, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._idle, self._lifetime, self._clock = idle, lifetime, clock
        self._sessions: dict[str, ConsoleSession] = {}
        self._lock = threading.Lock()

    def open(self, principal: Principal) -> tuple[str, ConsoleSession]:
        """A new session for ``principal``: the cookie token (given to the browser once) and the session."""
        now = self._clock()
        expires_at = now + self._lifetime
        if principal.expires_at is not None:
            expires_at = min(expires_at, principal.expires_at)
        opened = ConsoleSession(
            actor=principal.actor,
            role=principal.role,
            csrf_token=new_token(),
            key_id=principal.key_id,
            expires_at=expires_at,
            last_seen=now,
        )
        token = new_token()
        with self._lock:
            self._forget_ended(now)
            while len(self._sessions) >= MAX_SESSIONS:
                oldest = min(self._sessions, key=lambda key: self._sessions[key].last_seen)
                del self._sessions[oldest]
            self._sessions[_digest(token)] = opened
        return token, opened

    def find(self, token: str | None) -> ConsoleSession | None:
        """The live session of a cookie token (its idle time starts again), or None."""
        if not token:
            return None
        now = self._clock()
        key = _digest(token)
        with self._lock:
            found = self._sessions.get(key)
            if found is None:
                return None
            if self._ended(found, now):
                del self._sessions[key]
                return None
            found.last_seen = now
            return found

    def close(self, token: str | None) -> None:
        """End the session of ``token`` (logout, or its API key was revoked)."""
        if token:
            with self._lock:
                self._sessions.pop(_digest(token), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _ended(self, session: ConsoleSession, now: datetime) -> bool:
        return now >= session.expires_at or now - session.last_seen >= self._idle

    def _forget_ended(self, now: datetime) -> None:
        for key in [key for key, session in self._sessions.items() if self._ended(session, now)]:
            del self._sessions[key]
