"""Every API request in the audit trail, or no answer: who, when, what, from where, outcome.

* Before a change runs (any method but GET, HEAD, OPTIONS), :func:`record_change` writes an
  event ``requested``, after the caller was authenticated and before the route does anything.
  When it cannot be written the request is refused, nothing changed: 507 while the data disk
  is at its free-space reserve (``LUNGCDS_MIN_FREE_DISK_MB``), 503 otherwise (this refusal
  goes out even when its own outcome cannot be written either: it shows nothing).
* When the response starts, :class:`AuditMiddleware` writes the event with its HTTP status.
  When that cannot be written, a read is answered 503 instead of its data (nothing is shown
  unaudited; 507 below half the disk reserve, where the trail stops writing,
  :data:`server.audit.AUDIT_FLOOR_SHARE`), and so is any request refused before it ran; a change that ran keeps its true
  answer, because its ``requested`` event is in the trail (the failure is logged).

Both events of a request share ``detail.request``.  Targets are the path and query string
with credentials masked: query values under secret-looking names (``api_key``, ``token``,
``password`` ...) and any value that looks like one of our API keys or a JWT, in the path
too.  Keys are never accepted from the URL (:mod:`server.api.deps`), and never stored.
"""

from __future__ import annotations

import logging
import re
import uuid
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.admission import SAFE_METHODS
from server.api.problems import Problem, problem_response
from server.audit import REQUESTED, AuditTrail, AuditUnavailable
from server.core.security import API_KEY_PREFIX

__all__ = ["REDACTED", "AuditMiddleware", "audited_target", "record_change"]

logger = logging.getLogger(__name__)

REDACTED = "REDACTED"
_SECRET_NAME = re.compile(r"key|token|secret|passw|pwd|auth|credential|session|signature|jwt|bearer", re.IGNORECASE)
#: A JWT: base64url JSON header (always starting ``{"`` → ``eyJ``), payload and signature.
_JWT = re.compile(r"eyJ[\w-]*\.[\w-]+\.[\w-]*")


def _secret_value(value: str) -> bool:
    return value.startswith(API_KEY_PREFIX) or _JWT.fullmatch(value) is not None


def audited_target(path: str, query: str) -> str:
    """``path?query`` as stored in the trail: credentials masked as ``REDACTED``."""
    segments = "/".join(REDACTED if _secret_value(unquote(part)) else part for part in path.split("/"))
    if not query:
        return segments
    pairs = [
        (name, REDACTED if _SECRET_NAME.search(name) or _secret_value(value) else value)
        for name, value in parse_qsl(query, keep_blank_values=True)
    ]
    return f"{segments}?{urlencode(pairs)}"


def _route_template(path: str, path_params: dict[str, Any]) -> str:
    """``/api/v1/series/1.2.3`` with ``{"series_uid": "1.2.3"}`` → ``/api/v1/series/{series_uid}``."""
    names = {str(value): name for name, value in path_params.items()}
    return "/".join(f"{{{names[part]}}}" if part in names else part for part in path.split("/"))


def _event(request: Request) -> dict[str, Any]:
    """The fields of the request's audit events, but the outcome."""
    return {
        "channel": "api",
        "actor": getattr(request.state, "actor", "anonymous"),
        "role": getattr(request.state, "role", None),
        "source": request.client.host if request.client else None,
        "action": f"{request.method} {_route_template(request.url.path, request.path_params)}",
        "target": audited_target(request.url.path, request.url.query),
        "detail": {"request": request.state.audit_request},
    }


async def record_change(request: Request) -> None:
    """Audit a change before it runs ('requested'); refuse it (nothing changed) when that cannot be written."""
    if request.method in SAFE_METHODS:
        return
    trail: AuditTrail = request.app.state.audit_trail
    try:
        await run_in_threadpool(partial(trail.record_or_raise, outcome=REQUESTED, change=True, **_event(request)))
    except AuditUnavailable as exc:
        request.state.refused_unaudited = True
        title = "Insufficient storage" if exc.status == 507 else "Audit trail unavailable"
        raise Problem(exc.status, title, f"nothing was changed: {exc.reason}") from exc
    request.state.change_requested = True


class AuditMiddleware:
    """Writes each API request's outcome before its answer goes out (see the module docstring).

    Parameters
    ----------
    app : ASGIApp
        The application.
    trail : AuditTrail
        Where the events go.
    unaudited : frozenset of str
        Paths never audited (probes and scrapes, which would flood the trail).
    unaudited_prefixes : tuple of str
        Path prefixes never audited: static files that hold no data (the docs page's assets).
    """

    def __init__(
        self, app: ASGIApp, *, trail: AuditTrail, unaudited: frozenset[str], unaudited_prefixes: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self._trail = trail
        self._unaudited = unaudited
        self._unaudited_prefixes = unaudited_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in self._unaudited or path.startswith(self._unaudited_prefixes):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        request.state.audit_request = uuid.uuid4().hex
        started = withheld = False

        async def audited_send(message: Message) -> None:
            nonlocal started, withheld
            if withheld:
                return
            if message["type"] == "http.response.start":
                started = True
                try:
                    await run_in_threadpool(
                        partial(self._trail.record_or_raise, outcome=str(message["status"]), **_event(request))
                    )
                except AuditUnavailable as exc:
                    if getattr(request.state, "change_requested", False):
                        logger.error("the outcome of an audited change was not written: %s", exc.reason)
                    elif not getattr(request.state, "refused_unaudited", False):
                        withheld = True
                        title = "Insufficient storage" if exc.status == 507 else "Audit trail unavailable"
                        problem = Problem(exc.status, title, f"the request was not served: {exc.reason}")
                        await problem_response(problem, scope["path"], close=True)(scope, receive, send)
                        return
            await send(message)

        try:
            await self.app(scope, receive, audited_send)
        except Exception:
            if not started:  # the server answers 500; the trail says so
                await run_in_threadpool(partial(self._trail.record, outcome="500", **_event(request)))
            raise
