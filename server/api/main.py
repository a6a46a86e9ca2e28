"""The FastAPI application: versioned under ``/api/v1``, OpenAPI published."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI
from sqlalchemy.engine import Engine
from starlette.middleware import Middleware

from models import PIPELINE_VERSION
from server.api import metrics
from server.api.admission import AuthenticateFirst, BodyLimit
from server.api.auditing import AuditMiddleware, record_change
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
from server.audit import AuditTrail, build_audit_trail
from server.core.config import Settings
from server.core.oidc import OidcVerifier
from server.tasks.queue import QueueGateway

__all__ = ["API_PREFIX", "UNAUDITED_PATHS", "create_app"]

API_PREFIX = "/api/v1"

#: Probes and scrapes that would flood the audit trail without touching any data.
UNAUDITED_PATHS = frozenset(
    {f"{API_PREFIX}/health", f"{API_PREFIX}/health/live", f"{API_PREFIX}/health/ready", "/metrics"}
)


def create_app(
    settings: Settings, engine: Engine, queue: QueueGateway | None = None, audit_trail: AuditTrail | None = None
) -> FastAPI:
    """An app bound to ``settings``, ``engine`` and the task ``queue`` (no globals).

    Without a queue (offline tools, some tests) the admin actions that enqueue answer 503.
    Every request passes, in this order: its audit (:mod:`server.api.auditing`), the body
    limits, then authentication of changes and bodies (:mod:`server.api.admission`).
    """
    trail = audit_trail or build_audit_trail(settings, engine)
    weights_upload = f"{API_PREFIX}{model_weights.router.prefix}{model_weights.UPLOAD_PATH}"
    app = FastAPI(
        title="lungcds",
        version=PIPELINE_VERSION,
        description="Clinical decision support for chest CT: series, jobs, results and reports.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        middleware=[
            Middleware(AuditMiddleware, trail=trail, unaudited=UNAUDITED_PATHS),
            Middleware(
                BodyLimit,
                limit=settings.max_request_body_kb * 2**10,
                larger=[("PUT", weights_upload, settings.max_weights_upload_mb * 2**20)],
            ),
            Middleware(AuthenticateFirst),
        ],
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.queue = queue
    app.state.audit_trail = trail
    app.state.oidc = _oidc_verifier(settings)
    app.state.metrics_registry = registry_for(engine, queue, settings.lost_job_after_s)
    install_problem_handlers(app)
    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(record_change)])
    for module in (health, studies, series, jobs, rules, destinations, model_weights, retrieve, audit, queues):
        api.include_router(module.router)
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
