"""The FastAPI application: versioned under ``/api/v1``, OpenAPI published."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from sqlalchemy.engine import Engine

from models import PIPELINE_VERSION
from server.api.problems import install_problem_handlers
from server.api.routes import health, jobs, rules, series, studies
from server.core.config import Settings

__all__ = ["API_PREFIX", "create_app"]

API_PREFIX = "/api/v1"


def create_app(settings: Settings, engine: Engine) -> FastAPI:
    """An app bound to ``settings`` and ``engine`` (no globals)."""
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
    install_problem_handlers(app)
    api = APIRouter(prefix=API_PREFIX)
    for module in (health, studies, series, jobs, rules):
        api.include_router(module.router)
    app.include_router(api)
    return app
