"""The audit trail, for admins: every API access, DICOM association, rejected admin file and admin change."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from server.api.deps import Admin, SessionDep
from server.api.listing import Instant
from server.api.schemas import Page
from server.services.listings import AuditFilter, find_audit_events

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
    filters = AuditFilter(channel=channel, actor=actor, outcome=outcome, since=since, until=until)
    listing = find_audit_events(session, filters, limit=limit, offset=offset)
    items = [AuditEventPublic(**r.model_dump()) for r in listing.items]
    return Page(total=listing.total, limit=limit, offset=offset, items=items)
