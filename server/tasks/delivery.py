"""The outbox: report objects are C-STOREd to each destination until the PACS accepts.

Every object and destination is a ``Delivery`` row.  The pump of the ``serve`` process leases
due rows and enqueues one delivery task each; a task claims its row, makes one attempt and
records the outcome, pushing the next attempt back exponentially (capped) on failure.  A row
whose sender died is leased again after the lease expires, so a lost message loses nothing.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from celery import Celery, shared_task
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import col

from dicom_node.scu import AssociationFailed, ContextsRefused, Destination, parse_destination, send_files
from dicom_node.statuses import status_name
from server import crud
from server.core.config import Settings
from server.core.db import session_scope
from server.core.tls import with_tls
from server.db_models import Delivery, DeliveryState, utcnow
from server.routing.destinations import load_destinations
from server.tasks.app import DELIVERY_TASK
from server.tasks.base import LungcdsTask

__all__ = ["LEASE", "deliver_object", "enqueue_delivery", "is_final_refusal", "pump_outbox", "retry_delay"]

logger = logging.getLogger(__name__)

#: How long a leased or claimed delivery may stay without an outcome before it is retried.
LEASE = timedelta(minutes=5)


def retry_delay(attempts: int, cap_seconds: float) -> timedelta:
    """Exponential back-off from 5 s, capped at ``cap_seconds``."""
    return timedelta(seconds=min(cap_seconds, 5.0 * 2 ** max(0, attempts - 1)))


def enqueue_delivery(app: Celery, delivery_id: int) -> None:
    """Put one delivery attempt on the cpu queue."""
    app.send_task(DELIVERY_TASK, args=[delivery_id])


def pump_outbox(app: Celery, engine: Engine) -> int:
    """Lease every due outbox row and enqueue its delivery; the number enqueued."""
    now = utcnow()
    with session_scope(engine) as session:
        due = crud.due_deliveries(session, now, LEASE)
        leased: list[int] = []
        for delivery_id in due:
            won = crud.changed_rows(
                session,
                update(Delivery)
                .where(col(Delivery.id) == delivery_id, col(Delivery.state) == DeliveryState.PENDING)
                .values(next_attempt_at=now + LEASE),
            )
            if won:
                leased.append(delivery_id)
    for delivery_id in leased:
        enqueue_delivery(app, delivery_id)
    return len(leased)


def _resolve(settings: Settings, address: str) -> tuple[Destination, str, bool]:
    """The destination of an outbox row (over TLS when its entry says so), our calling AE for it and
    whether it gets compressed objects decoded."""
    target = parse_destination(address)
    entry = next((e for e in load_destinations(settings).destinations if e.address == address), None)
    if entry is None:
        return target, settings.ae_title, False
    return (
        (with_tls(settings, target) if entry.tls else target),
        entry.calling_aet or settings.ae_title,
        entry.uncompressed,
    )


def is_final_refusal(status: int) -> bool:
    """Whether a C-STORE failure status means "never", not "not now" (PS3.4 Annex B.2.3).

    0xA7xx (out of resources) and 0x0110 (processing failure) may pass; 0x0122 (SOP class
    not supported), 0x0124 (not authorised), 0xA9xx (data set does not match the SOP class)
    and 0xCxxx (cannot understand) will not change on a retry of the same object.
    """
    if status in (0x0122, 0x0124):
        return True
    return (status & 0xFF00) == 0xA900 or (status & 0xF000) == 0xC000


@shared_task(bind=True, base=LungcdsTask, name=DELIVERY_TASK)
def deliver_object(self: LungcdsTask, delivery_id: int) -> None:
    """One C-STORE attempt of one report object to one destination."""
    engine, settings = self.engine, self.settings
    with session_scope(engine) as session:
        delivery = crud.claim_delivery(session, delivery_id, LEASE)
        if delivery is None:
            return
        destination, path, attempts = delivery.destination, Path(delivery.path), delivery.attempts
    error: str | None = None
    final = False
    try:
        target, calling_aet, uncompressed = _resolve(settings, destination)
        results = send_files(target, [path], calling_aet=calling_aet, uncompressed=uncompressed)
        failed = [r for r in results if not r.ok]
        if failed:
            error = "; ".join(r.error or f"status {status_name(r.status)}" for r in failed)
            final = all(is_final_refusal(r.status) for r in failed)
    except ContextsRefused as exc:
        error, final = f"refused by the destination: {exc.reason}", True
    except AssociationFailed as exc:
        error = f"association failed: {exc}"
    except (OSError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    extra = {"delivery": delivery_id, "destination": destination, "error": error}
    with session_scope(engine) as session:
        if error is None:
            crud.delivery_sent(session, delivery_id)
            logger.info("report delivered", extra=extra)
        elif final:
            crud.delivery_refused(session, delivery_id, error)
            logger.warning("delivery refused by the destination; not retried", extra=extra)
        else:
            retry_at = utcnow() + retry_delay(attempts, settings.delivery_max_backoff_seconds)
            crud.delivery_failed(session, delivery_id, error, retry_at)
            logger.warning("delivery failed; will retry", extra=extra)
