"""Health: unauthenticated probes for load balancers, orchestrators and monitoring.

``/health/live`` says the process serves requests; ``/health/ready`` says it can do its job
(database, broker and spool disk) and whether it does it as the admins configured it: a rules
or destinations file or a weights manifest that is broken leaves the server ready but ``degraded``, with the reason
(its last good version is in force, see :mod:`server.core.admin_file`); ``/health`` is a
summary for people.
"""

from __future__ import annotations

import shutil

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from models import PIPELINE_VERSION
from server.api.deps import AuditTrailDep, SessionDep, SettingsDep
from server.api.problems import PROBLEM_JSON
from server.api.schemas import Health
from server.core.config import Settings
from server.core.disk import disk_shortage
from server.core.weights import AdminWeightStore
from server.routing.destinations import destinations_in_force
from server.routing.rules import rules_in_force

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
    status = "ok" if database == "ok" and disk_shortage(settings) is None else "degraded"
    return Health(
        status=status, version=PIPELINE_VERSION, database=database, spool_free_mb=round(_free_mb(settings), 1)
    )


@router.get("/live")
async def live() -> dict[str, str]:
    """The process answers HTTP (liveness: restart it when this fails).

    Served on the event loop itself, not by a worker thread, so that it answers while every
    thread is busy (long uploads, slow database).
    """
    return {"status": "alive"}


@router.get("/ready")
def ready(request: Request, session: SessionDep, settings: SettingsDep, trail: AuditTrailDep) -> JSONResponse:
    """Database, broker and disk all usable (readiness: route traffic here only when 200).

    A broken admin file (rules, destinations, a weights manifest) answers 200 ``degraded`` with the reason: the
    server keeps working with its last good version, and admins need the API to repair it.
    """
    queue = request.app.state.queue
    essential = {
        "database": _database(session),
        "broker": "not configured" if queue is None else (queue.check() or "ok"),
        "disk": disk_shortage(settings) or "ok",
    }
    rules = rules_in_force(settings.rules_file, settings.max_slice_thickness_mm, trail)
    destinations = destinations_in_force(settings, trail)
    configured = {
        name: "ok" if error is None else f"{error}; the {source} is in force"
        for name, error, source in (
            ("rules", rules.error, rules.source),
            ("destinations", destinations.error, destinations.source),
        )
    }
    broken_manifests = AdminWeightStore(settings.weights_dir, trail).manifest_errors()
    configured["weights"] = "; ".join(broken_manifests.values()) or "ok"
    checks = {**essential, **configured}
    failing = {name: value for name, value in essential.items() if value not in ("ok", "not configured")}
    degraded = {name: value for name, value in configured.items() if value != "ok"}
    if failing:
        body = {
            "type": "about:blank",
            "title": "Not ready",
            "status": 503,
            "detail": "; ".join(f"{name}: {value}" for name, value in failing.items()),
            "instance": str(request.url.path),
            "checks": checks,
        }
        return JSONResponse(body, status_code=503, media_type=PROBLEM_JSON)
    if degraded:
        detail = "; ".join(f"{name}: {value}" for name, value in degraded.items())
        return JSONResponse({"status": "degraded", "detail": detail, "checks": checks})
    return JSONResponse({"status": "ready", "checks": checks})
