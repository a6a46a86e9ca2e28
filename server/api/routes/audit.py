"""The audit trail, for admins: every API access, DICOM association, rejected admin file and admin change."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import func
from sqlmodel import col, select

from server.api.deps import Admin, SessionDep
from server.api.listing import Instant
from server.api.schemas import Page
from server.db_models import AuditEvent

router = APIRouter(prefix="/audit", tags=["audit"])


class AuditEventPublic(BaseModel):
    """One audit event."""

    id: int
    at: datetime
    channel: str
    actor: str
    role: str | None
    source: str | None
    action: str
    target: str | None
    outcome: str
    detail: dict[str, Any]


@router.get("", response_model=Page[AuditEventPublic])
def list_audit_events(
    session: SessionDep,
    _key: Admin,
    channel: str | None = Query(None, pattern="^(api|dicom|config|admin)$"),
    actor: str | None = Query(None, max_length=200),
    outcome: str | None = Query(None, max_length=64),
    since: Instant | None = None,
    until: Instant | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=2**62),
) -> Page[AuditEventPublic]:
    """Audit events, newest first."""
    stmt = select(AuditEvent)
    if channel:
        stmt = stmt.where(AuditEvent.channel == channel)
    if actor:
        stmt = stmt.where(AuditEvent.actor == actor)
    if outcome:
        stmt = stmt.where(AuditEvent.outcome == outcome)
    if since:
        stmt = stmt.where(col(AuditEvent.at) >= since)
    if until:
        stmt = stmt.where(col(AuditEvent.at) <= until)
    total = session.exec(select(func.count()).select_from(stmt.subquery())).one()
    rows = session.exec(stmt.order_by(col(AuditEvent.id).desc()).offset(offset).limit(limit)).all()
    return Page(total=total, limit=limit, offset=offset, items=[AuditEventPublic(**r.model_dump()) for r in rows])
