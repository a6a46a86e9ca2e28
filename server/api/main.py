"""The FastAPI application: versioned under ``/api/v1``, OpenAPI published."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, FastAPI, Request, Response
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from models import PIPELINE_VERSION
from server.api import metrics
from server.api.metrics import registry_for
from server.api.problems import install_problem_handlers
from server.api.routes import (
    audit,
    destinations,
    health,
    jobs,
    model_weights,
    queues,
    retrieve,
    rules,
    series,
    studies,
)
from server.audit import AuditTrail
from server.core.config import Settings
from server.core.oidc import OidcVerifier
from server.tasks.queue import QueueGateway

__all__ = ["API_PREFIX", "create_app"]

API_PREFIX = "/api/v1"


def create_app(
    settings: Settings, engine: Engine, queue: QueueGateway | None = None, audit_trail: AuditTrail | None = None
) -> FastAPI:
    """An app bound to ``settings``, ``engine`` and the task ``queue`` (no globals).

    Without a queue (offline tools, some tests) the admin actions that enqueue answer 503.
    """
    app = FastAPI(
        title="lungcds",
        version=PIPELINE_VERSION,
        description="Clinical decision support for chest CT: series, jobs, results and reports.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.queue = queue
    app.state.oidc = _oidc_verifier(settings)
    app.state.metrics_registry = registry_for(engine, queue)
    install_problem_handlers(app)
    _install_audit(app, audit_trail or AuditTrail(engine, receiver=settings.ae_title))
    api = APIRouter(prefix=API_PREFIX)
    for module in (health, studies, series, jobs, rules, destinations, model_weights, retrieve, audit, queues):
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(metrics.router)
    return app


#: Probes and scrapes that would flood the audit trail without touching any data.
UNAUDITED_PATHS = frozenset(
    {f"{API_PREFIX}/health", f"{API_PREFIX}/health/live", f"{API_PREFIX}/health/ready", "/metrics"}
)


def _install_audit(app: FastAPI, audit_trail: AuditTrail) -> None:
    """Write one audit event per API request: who, when, what, from where, outcome."""

    @app.middleware("http")
    async def audit_request(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        if request.url.path in UNAUDITED_PATHS:
            return response
        template = _route_template(request.url.path, request.scope.get("path_params") or {})
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        await run_in_threadpool(
            audit_trail.record,
            channel="api",
            actor=getattr(request.state, "actor", "anonymous"),
            role=getattr(request.state, "role", None),
            source=request.client.host if request.client else None,
            action=f"{request.method} {template}",
            target=target,
            outcome=str(response.status_code),
        )
        return response


def _route_template(path: str, path_params: dict[str, str]) -> str:
    """``/api/v1/series/1.2.3`` with ``{"series_uid": "1.2.3"}`` → ``/api/v1/series/{series_uid}``."""
    names = {str(value): name for name, value in path_params.items()}
    return "/".join(f"{{{names[part]}}}" if part in names else part for part in path.split("/"))


def _oidc_verifier(settings: Settings) -> OidcVerifier | None:
    """The token verifier when OIDC is configured (all three settings are then present)."""
    if settings.oidc_issuer is None or settings.oidc_audience is None or settings.oidc_jwks_file is None:
        return None
    return OidcVerifier(
        settings.oidc_issuer,
        settings.oidc_audience,
        settings.oidc_jwks_file,
        role_claim=settings.oidc_role_claim,
        admin_values=tuple(settings.oidc_admin_values),
        viewer_values=tuple(settings.oidc_viewer_values),
    )
