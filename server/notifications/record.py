"""Writing result notifications into the outbox, in the transaction of the state change they report.

Called where a series is settled (:mod:`server.tasks.analysis`, :mod:`server.routing.intake`)
with the session that records the new state: the notification is committed with the change or
rolled back with it, so a receiver never hears of a state the database does not hold and never
misses one it does.  Nothing is sent here; the pump (:mod:`server.tasks.notify`) sends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlmodel import Session

from server import crud
from server.core.config import Settings
from server.db_models import Job, NotificationChannel
from server.notifications.facts import EventKind, event_facts

__all__ = ["receiver_address", "receivers", "record_notifications"]


def receivers(settings: Settings) -> list[tuple[str, str]]:
    """(channel, URL) of every configured receiver: each webhook URL, then the FHIR server."""
    targets = [(NotificationChannel.WEBHOOK, url) for url in settings.notify_webhook_urls]
    if settings.notify_fhir_base_url:
        targets.append((NotificationChannel.FHIR, settings.notify_fhir_base_url))
    return targets


def receiver_address(url: str) -> str:
    """A receiver's URL as shown over REST: without user information, query or fragment (they may hold a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def record_notifications(
    session: Session,
    settings: Settings,
    event: EventKind,
    *,
    job_id: int | None,
    reasons: Sequence[str],
    series_uid: str | None = None,
    result: Mapping[str, Any] | None = None,
) -> list[int]:
    """Put one notification of ``event`` per receiver in the outbox; their ids (none without receivers).

    ``series_uid`` defaults to the series of ``job_id``; ``result`` is the analysis' result.json,
    for its headline numbers and validation status.
    """
    targets = receivers(settings)
    if not targets:
        return []
    if series_uid is None:
        job = session.get(Job, job_id) if job_id is not None else None
        if job is None:
            raise ValueError("a notification needs its series: give series_uid or the id of an existing job")
        series_uid = job.series_instance_uid
    facts = event_facts(session, event=event, series_uid=series_uid, job_id=job_id, reasons=reasons, result=result)
    data = facts.model_dump(mode="json")
    return [
        crud.add_notification(
            session,
            job_id=job_id,
            series_uid=series_uid,
            event=event,
            channel=channel,
            target=target,
            facts=data,
        )
        for channel, target in targets
    ]
