"""Health: unauthenticated, for load balancers and monitoring."""

from __future__ import annotations

import shutil

from fastapi import APIRouter
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from models import PIPELINE_VERSION
from server.api.deps import SessionDep, SettingsDep
from server.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health(session: SessionDep, settings: SettingsDep) -> Health:
    """Database reachable and free space of the spool."""
    try:
        session.exec(text("SELECT 1"))  # type: ignore[call-overload]
        database = "ok"
    except SQLAlchemyError as exc:  # the health answer reports it instead of failing
        database = f"error: {type(exc).__name__}"
    free_mb = shutil.disk_usage(settings.data_dir).free / 2**20
    status = "ok" if database == "ok" and free_mb > settings.min_free_disk_mb else "degraded"
    return Health(status=status, version=PIPELINE_VERSION, database=database, spool_free_mb=round(free_mb, 1))
