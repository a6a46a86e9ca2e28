"""Health: unauthenticated probes for load balancers, orchestrators and monitoring.

``/health/live`` says the process serves requests; ``/health/ready`` says it can do its job
(database, broker and spool disk); ``/health`` is a summary for people.
"""

from __future__ import annotations

import shutil

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from models import PIPELINE_VERSION
from server.api.deps import SessionDep, SettingsDep
from server.api.problems import PROBLEM_JSON
from server.api.schemas import Health
from server.core.config import Settings

router = APIRouter(prefix="/health", tags=["health"])


def _database(session: Session) -> str:
    try:
        session.exec(text("SELECT 1"))  # type: ignore[call-overload]
    except SQLAlchemyError as exc:  # the probe reports it instead of failing
        return f"error: {type(exc).__name__}"
    return "ok"


def _free_mb(settings: Settings) -> float:
    return shutil.disk_usage(settings.data_dir).free / 2**20


@router.get("", response_model=Health)
def health(session: SessionDep, settings: SettingsDep) -> Health:
    """Database reachable and free space of the spool."""
    database = _database(session)
    free_mb = _free_mb(settings)
    status = "ok" if database == "ok" and free_mb > settings.min_free_disk_mb else "degraded"
    return Health(status=status, version=PIPELINE_VERSION, database=database, spool_free_mb=round(free_mb, 1))


@router.get("/live")
def live() -> dict[str, str]:
    """The process answers HTTP (liveness: restart it when this fails)."""
    return {"status": "alive"}


@router.get("/ready")
def ready(request: Request, session: SessionDep, settings: SettingsDep) -> JSONResponse:
    """Database, broker and disk all usable (readiness: route traffic here only when 200)."""
    checks: dict[str, str] = {"database": _database(session)}
    queue = request.app.state.queue
    checks["broker"] = "not configured" if queue is None else (queue.check() or "ok")
    free_mb = _free_mb(settings)
    enough = free_mb > settings.min_free_disk_mb
    checks["disk"] = "ok" if enough else f"{free_mb:.0f} MB free, below {settings.min_free_disk_mb} MB"
    failing = {name: value for name, value in checks.items() if value not in ("ok", "not configured")}
    if not failing:
        return JSONResponse({"status": "ready", "checks": checks})
    body = {
        "type": "about:blank",
        "title": "Not ready",
        "status": 503,
        "detail": "; ".join(f"{name}: {value}" for name, value in failing.items()),
        "instance": str(request.url.path),
        "checks": checks,
    }
    return JSONResponse(body, status_code=503, media_type=PROBLEM_JSON)
