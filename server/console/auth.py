"""Who uses the console: login with an API key, the session of each request, CSRF, roles, logout.

* **Login** (``/console/login``): a form takes an API key, or an OIDC access token pasted
  into it, and checks it with the REST API's own check (:func:`server.api.deps.verify_secret`).
  The form carries a token that must match a cookie set with the form (double submit), so no
  other site can log a browser in under its own key.
* **Each request**: the session named by the cookie (:class:`server.console.sessions.SessionStore`),
  whose API key must still be active; its actor and role go to the audit trail exactly as a REST
  caller's do.  A page without a session sends the browser to the login form; a POST without
  one is refused (401) before its body is read.
* **Every POST** carries the session's CSRF token (synchronizer token; 403 without it), then an
  admin action needs the admin role (403) and is audited (``requested``) before it runs
  (:func:`server.api.auditing.record_change`), as a REST change is.
"""

from __future__ import annotations

import hmac
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from server.api.admission import SAFE_METHODS
from server.api.auditing import record_change
from server.api.deps import NoRole, verify_secret
from server.api.problems import Problem
from server.console.forms import Form, read_form
from server.console.rendering import render
from server.console.sessions import LOGIN_COOKIE, SESSION_COOKIE, ConsoleSession, SessionStore, new_token
from server.core.security import api_key_active

__all__ = [
    "CONSOLE_PREFIX",
    "AdminForm",
    "LoginRequired",
    "PostedForm",
    "User",
    "login_redirect",
    "router",
]

CONSOLE_PREFIX = "/console"
LOGIN_PATH = f"{CONSOLE_PREFIX}/login"

router = APIRouter(prefix=CONSOLE_PREFIX)


class LoginRequired(Exception):
    """A page asked for without a live session: the browser is sent to the login form, then back."""

    def __init__(self, then: str) -> None:
        super().__init__(then)
        self.then = then


def _store(request: Request) -> SessionStore:
    store: SessionStore = request.app.state.console_sessions
    return store


def _secure(request: Request) -> bool:
    """Cookies are Secure when the console is served over HTTPS (``LUNGCDS_API_TLS_CERTIFICATE``)."""
    return request.url.scheme == "https"


def _live_session(request: Request) -> ConsoleSession | None:
    """The session of the request's cookie, ended when its API key was revoked since (blocking)."""
    token = request.cookies.get(SESSION_COOKIE)
    found = _store(request).find(token)
    if found is not None and found.key_id is not None:
        with Session(request.app.state.engine) as session:
            active = api_key_active(session, found.key_id)
        if not active:
            _store(request).close(token)
            return None
    return found


def console_user(request: Request) -> ConsoleSession:
    """The logged-in user; the login form for a page without a session, 401 for a POST.

    The actor and role are kept on the request for the audit trail
    (:class:`server.api.auditing.AuditMiddleware`).
    """
    found = _live_session(request)
    if found is None:
        if request.method in SAFE_METHODS:
            raise LoginRequired(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        raise Problem(401, "Not logged in", "your console session has ended; log in again and repeat the action")
    request.state.console_session = found
    request.state.actor, request.state.role = found.actor, found.role
    return found


User = Annotated[ConsoleSession, Depends(console_user)]


async def posted_form(request: Request, user: User) -> Form:
    """The posted form of a logged-in user, once its CSRF token matches the session's (403 otherwise)."""
    form = await read_form(request)
    if not hmac.compare_digest(form.text("csrf_token").encode(), user.csrf_token.encode()):
        raise Problem(403, "Form refused", "the form does not carry this session's CSRF token; reload the page")
    return form


PostedForm = Annotated[Form, Depends(posted_form)]


async def admin_form(request: Request, user: User, form: PostedForm) -> Form:
    """The form of an admin action: the admin role (403 otherwise), audited before the action runs."""
    if not user.is_admin:
        raise Problem(403, "Admin role required", f"this action needs the admin role, you have {user.role!r}")
    await record_change(request)
    return form


AdminForm = Annotated[Form, Depends(admin_form)]


def _then(value: str | None) -> str:
    """Where to go after login: a console page of this server, never another site."""
    if value and value.startswith(f"{CONSOLE_PREFIX}/") and "//" not in value and "\\" not in value:
        return value
    return f"{CONSOLE_PREFIX}/"


def _login_page(request: Request, then: str, error: str | None = None, status: int = 200) -> Response:
    """The login form, with a fresh double-submit token in the form and in a cookie."""
    token = new_token()
    response = render(request, "login.html", {"login_token": token, "then": then, "error": error}, status)
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request), path=LOGIN_PATH)
    return response


@router.get("/login")
def login_form(request: Request, then: str | None = None) -> Response:
    """The login form (a logged-in user goes straight on)."""
    if _live_session(request) is not None:
        return RedirectResponse(_then(then), status_code=303)
    return _login_page(request, _then(then))


@router.post("/login")
async def login(request: Request) -> Response:
    """Open a session for a valid API key or token: 303 to the page asked for, the login form again otherwise."""
    form = await read_form(request)
    then = _then(form.optional("then"))
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(form.text("login_token").encode(), expected.encode()):
        return _login_page(request, then, "The login form had expired; please log in again.", 403)
    credential = form.text("credential")
    if not credential:
        return _login_page(request, then, "Enter your API key.", 401)
    state = request.app.state
    try:
        principal = await run_in_threadpool(
            verify_secret, state.engine, state.oidc, state.settings.oidc_role_claim, credential
        )
    except NoRole as exc:
        request.state.actor = exc.actor
        return _login_page(request, then, exc.detail, exc.status)
    except Problem as exc:
        return _login_page(request, then, exc.detail, exc.status)
    request.state.actor, request.state.role = principal.actor, principal.role
    token, _opened = _store(request).open(principal)
    response = RedirectResponse(then, status_code=303)
    response.set_cookie(
        SESSION_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request), path=CONSOLE_PREFIX
    )
    response.delete_cookie(LOGIN_COOKIE, path=LOGIN_PATH, httponly=True, samesite="strict", secure=_secure(request))
    return response


@router.post("/logout")
def logout(request: Request, _form: PostedForm) -> Response:
    """End the session (CSRF-checked, so no other site can log a user out) and show the login form."""
    _store(request).close(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    response.delete_cookie(
        SESSION_COOKIE, path=CONSOLE_PREFIX, httponly=True, samesite="strict", secure=_secure(request)
    )
    return response


def login_redirect(then: str) -> RedirectResponse:
    """The answer to :class:`LoginRequired`: the login form, then the page asked for."""
    return RedirectResponse(f"{LOGIN_PATH}?then={quote(then, safe='')}", status_code=303)
