"""The console as an application of its own, reached through the API's middleware (issue 18).

:func:`create_console` builds it on the API's settings, database, queue and audit trail.
:class:`ConsoleGate` hands it every request under ``/console`` after the API's audit
(:class:`server.api.auditing.AuditMiddleware`) and body limit (:class:`server.api.admission.BodyLimit`),
in place of the API's header authentication (:class:`server.api.admission.AuthenticateFirst`):
a browser sends no ``Authorization`` header; the console authenticates by its session instead
(:mod:`server.console.auth`), before it reads a body.  Its own app, so that its errors are pages
people read rather than problem documents, and none of its routes enter the OpenAPI document.

The console's style sheet is served from ``/console/static/`` (not audited: it holds no data);
the pages use no script.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from server.api.problems import SERVICE_STATUS, Problem, validation_detail
from server.audit import AuditTrail, AuditUnavailable
from server.console import actions, auth, pages
from server.console.auth import CONSOLE_PREFIX, LoginRequired, login_redirect
from server.console.rendering import SecurityHeaders, render
from server.console.sessions import SessionStore
from server.core.config import Settings
from server.core.oidc import OidcVerifier
from server.services.admin import ServiceError
from server.tasks.queue import QueueGateway

__all__ = ["CONSOLE_PREFIX", "STATIC_PREFIX", "ConsoleGate", "create_console"]

#: The style sheet's path prefix (not audited, like the API docs' assets).
STATIC_PREFIX = f"{CONSOLE_PREFIX}/static/"
_STATIC_DIR = Path(__file__).with_name("static")


def _refusal(request: Request, status: int, title: str, detail: str) -> Response:
    """A page saying why a request was refused, linking back to where it came from."""
    back = getattr(request.state, "console_back", f"{CONSOLE_PREFIX}/")
    context: dict[str, Any] = {"status": status, "title": title, "detail": detail, "back": back}
    response = render(request, "error.html", context, status=status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Cookie realm="lungcds console"'
    return response


def _install_error_pages(app: FastAPI) -> None:
    """Refusals as pages: the services' (404, 409, 410, 422), HTTP problems, an unwritable audit trail."""

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> Response:
        return login_redirect(exc.then)

    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError) -> Response:
        status = next((code for kind, code in SERVICE_STATUS.items() if isinstance(exc, kind)), 400)
        return _refusal(request, status, exc.title, exc.detail)

    @app.exception_handler(AuditUnavailable)
    async def _unaudited(request: Request, exc: AuditUnavailable) -> Response:
        title = "Insufficient storage" if exc.status == 507 else "Audit trail unavailable"
        return _refusal(request, exc.status, title, f"nothing was changed: {exc.reason}")

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        return _refusal(request, exc.status, exc.title, str(exc.detail))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return _refusal(request, exc.status_code, str(exc.detail), str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        return _refusal(request, 422, "Invalid request", validation_detail(exc.errors()))


def create_console(
    settings: Settings,
    engine: Engine,
    queue: QueueGateway | None,
    trail: AuditTrail,
    oidc: OidcVerifier | None,
) -> FastAPI:
    """The console bound to the API's ``settings``, ``engine``, ``queue``, audit ``trail`` and token verifier."""
    app = FastAPI(
        title="lungcds console",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        middleware=[Middleware(SecurityHeaders)],
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.queue = queue
    app.state.audit_trail = trail
    app.state.oidc = oidc
    app.state.console_sessions = SessionStore(idle=timedelta(minutes=settings.console_session_minutes))
    _install_error_pages(app)
    app.mount(STATIC_PREFIX.rstrip("/"), StaticFiles(directory=str(_STATIC_DIR)), name="static")
    for module in (auth, pages, actions):
        app.include_router(module.router)
    return app


class ConsoleGate:
    """Sends requests under ``/console`` to the console, every other request on to the API.

    Placed after the API's audit and body limit and before its header authentication, so that
    console requests are audited and limited like any other, and authenticated by their session.
    """

    def __init__(self, app: ASGIApp, *, console: ASGIApp) -> None:
        self.app = app
        self._console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == CONSOLE_PREFIX or path.startswith(f"{CONSOLE_PREFIX}/"):
            await self._console(scope, receive, send)
        else:
            await self.app(scope, receive, send)
