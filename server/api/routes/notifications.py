"""Result notifications: what each receiver was told of each series' event, and whether it accepted."""

from __future__ import annotations

from fastapi import APIRouter, Query

from server import crud
from server.api.deps import SessionDep, Viewer
from server.api.schemas import NotificationPublic, Page
from server.db_models import Notification
from server.notifications.record import receiver_address

router = APIRouter(prefix="/notifications", tags=["notifications"])


def notification_public(row: Notification) -> NotificationPublic:
    """The public view of a notification: the receiver without credentials, never the facts sent."""
    return NotificationPublic(
        **row.model_dump(exclude={"target", "facts", "claimed_at"}), receiver=receiver_address(row.target)
    )


@router.get("", response_model=Page[NotificationPublic])
def list_notifications(
    session: SessionDep,
    _key: Viewer,
    series_instance_uid: str | None = Query(None, max_length=64),
    job_id: int | None = Query(None, ge=1, le=2**62),
    state: str | None = Query(None, pattern="^(pending|sending|sent|refused)$"),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=2**62),
) -> Page[NotificationPublic]:
    """Notifications, newest first: of a series (also one rejected without a job), of a job, in a state."""
    total, rows = crud.list_notifications(
        session, job_id=job_id, series_uid=series_instance_uid, state=state, limit=limit, offset=offset
    )
    return Page(total=total, limit=limit, offset=offset, items=[notification_public(r) for r in rows])
