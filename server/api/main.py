"""The FastAPI application: versioned under ``/api/v1``, OpenAPI published."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from sqlalchemy.engine import Engine
from starlette.middleware import Middleware

from models import PIPELINE_VERSION
from server.api import metrics
from server.api.admission import AuthenticateFirst, BodyLimit
from server.api.auditing import AuditMiddleware, record_change
from server.api.docs import install_docs
from server.api.metrics import registry_for
from server.api.problems import install_problem_handlers
from server.api.routes import (
    audit,
    destinations,
    dicomweb,
    health,
    jobs,
    model_weights,
    notifications,
    queues,
    retrieve,
    rules,
    series,
    studies,
)
from server.audit import AuditTrail, build_audit_trail
from server.console import STATIC_PREFIX, ConsoleGate, create_console
from server.core.config import Settings
from server.core.oidc import OidcVerifier
from server.tasks.queue import QueueGateway

__all__ = ["API_PREFIX", "UNAUDITED_PATHS", "create_app"]

API_PREFIX = "/api/v1"

DOCS_URL = f"{API_PREFIX}/docs"
#: Swagger UI's script, styles and icon (no data: not audited; nor is the console's style sheet, STATIC_PREFIX).
DOCS_ASSETS = f"{DOCS_URL}/assets/"

#: Probes and scrapes that would flood the audit trail without touching any data.
UNAUDITED_PATHS = frozenset(
    {f"{API_PREFIX}/health", f"{API_PREFIX}/health/live", f"{API_PREFIX}/health/ready", "/metrics"}
)


#: What every route behind authentication may answer, documented so that clients (and the docs page) know it.
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid API key or access token (Authorization: Bearer, or X-API-Key)"},
    403: {"description": "The caller's role may not do this (admin routes)"},
}


def create_app(
    settings: Settings, engine: Engine, queue: QueueGateway | None = None, audit_trail: AuditTrail | None = None
) -> FastAPI:
    """An app bound to ``settings``, ``engine`` and the task ``queue`` (no globals).

    Without a queue (offline tools, some tests) the admin actions that enqueue answer 503.
    Every request passes, in this order: its audit (:mod:`server.api.auditing`), the body
    limits, then authentication of changes and bodies (:mod:`server.api.admission`); requests
    under ``/console`` go to the console after the body limits, which authenticates them by its
    session instead (:mod:`server.console`).
    """
    trail = audit_trail or build_audit_trail(settings, engine)
    oidc = _oidc_verifier(settings)
    console = create_console(settings, engine, queue, trail, oidc)
    weights_upload = f"{API_PREFIX}{model_weights.router.prefix}{model_weights.UPLOAD_PATH}"
    app = FastAPI(
        title="lungcds",
        version=PIPELINE_VERSION,
        description="Clinical decision support for chest CT: series, jobs, results and reports.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # served with local assets by install_docs
        redoc_url=None,
        middleware=[
            Middleware(
                AuditMiddleware, trail=trail, unaudited=UNAUDITED_PATHS, unaudited_prefixes=(DOCS_ASSETS, STATIC_PREFIX)
            ),
            Middleware(
                BodyLimit,
                limit=settings.max_request_body_kb * 2**10,
                larger=[
                    ("PUT", weights_upload, settings.max_weights_upload_mb * 2**20),
                    *[
                        ("POST", f"{API_PREFIX}{dicomweb.router.prefix}{path}", settings.max_stow_request_mb * 2**20)
                        for path in dicomweb.STORE_PATHS
                    ],
                ],
            ),
            Middleware(ConsoleGate, console=console),
            Middleware(AuthenticateFirst),
        ],
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.queue = queue
    app.state.audit_trail = trail
    app.state.oidc = oidc
    app.state.metrics_registry = registry_for(engine, queue, settings)
    install_problem_handlers(app)
    install_docs(app, DOCS_URL, DOCS_ASSETS, f"{API_PREFIX}/openapi.json")
    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(record_change)])
    api.include_router(health.router)
    for module in (
        studies,
        series,
        jobs,
        notifications,
        rules,
        destinations,
        model_weights,
        retrieve,
        audit,
        queues,
        dicomweb,
    ):
        api.include_router(module.router, responses=AUTH_RESPONSES)
    app.include_router(api)
    app.include_router(metrics.router)
    return app


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
