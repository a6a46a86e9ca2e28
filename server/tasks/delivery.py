"""The outbox: report objects go to each destination until it accepts them.

A DICOM peer is sent C-STORE, a STOW-RS destination one STOW-RS request per object
(:mod:`server.services.dicomweb_send`), and a return-to-sender destination whichever of the two
its series' origin is listed at in ``LUNGCDS_SENDER_ADDRESSES``, looked up at each attempt; an
origin that is not listed (or a series without one, imported from a folder) is refused for good,
with that reason on the row and in the audit trail, and nothing is sent anywhere else.

Every object and destination is a ``Delivery`` row.  The pump of the ``serve`` process leases
due rows and enqueues one delivery task each; a task claims its row, makes one attempt and
records the outcome, pushing the next attempt back exponentially (capped) on failure.  A row
whose sender died is leased again after the lease expires, so a lost message loses nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from celery import Celery, shared_task
from sqlalchemy.engine import Engine

from dicom_node.scu import AssociationFailed, ContextsRefused, send_files
from dicom_node.statuses import status_name
from server import crud
from server.audit import build_audit_trail
from server.core.config import Settings
from server.core.db import session_scope
from server.core.tls import with_tls
from server.db_models import Delivery, Job, Series, utcnow
from server.routing.destinations import Address, DestinationEntry, load_destinations, parse_address, sender_address
from server.services.dicomweb_send import store_object
from server.tasks.app import DELIVERY_TASK
from server.tasks.base import LungcdsTask
from server.tasks.outbox import LEASE, lease_due, retry_delay

__all__ = ["deliver_object", "enqueue_delivery", "is_final_refusal", "pump_outbox"]

logger = logging.getLogger(__name__)


def enqueue_delivery(app: Celery, delivery_id: int) -> None:
    """Put one delivery attempt on the cpu queue."""
    app.send_task(DELIVERY_TASK, args=[delivery_id])


def pump_outbox(app: Celery, engine: Engine) -> int:
    """Lease every due delivery row and enqueue its attempt; the number enqueued."""
    leased = lease_due(engine, Delivery, LEASE)
    for delivery_id in leased:
        enqueue_delivery(app, delivery_id)
    return len(leased)


class NoSender(Exception):
    """A return-to-sender delivery whose series' origin has no address: refused for good, with why."""


def _entry(settings: Settings, address: str) -> DestinationEntry:
    """The destination entry of an outbox row; an address no longer listed is sent as it is, plainly."""
    listed = next((e for e in load_destinations(settings).destinations if e.address == address), None)
    return listed or DestinationEntry(address=address, calling_aet=None, uncompressed=False)


def _origin(engine: Engine, job_id: int) -> str | None:
    """Who sent the series of ``job_id``: its calling AE title, or its STOW-RS sender."""
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        series = session.get(Series, job.series_instance_uid) if job is not None else None
        return series.calling_aet if series is not None else None


def _target(settings: Settings, engine: Engine, entry: DestinationEntry, job_id: int) -> Address:
    """Where the object goes: the entry's own address, or for return-to-sender the sender's.

    Raises
    ------
    NoSender
        The series has no origin, or its origin is not in ``LUNGCDS_SENDER_ADDRESSES``.
    """
    address = parse_address(entry.address)
    if address.kind != "return-to-sender":
        return address
    origin = _origin(engine, job_id)
    found = sender_address(settings, origin)
    if found is None:
        raise NoSender(
            "return to sender: the series has no recorded sender (imported, or retrieved from a PACS)"
            if origin is None
            else f"return to sender: {origin} is not in LUNGCDS_SENDER_ADDRESSES; not sent anywhere else"
        )
    return found


def _send(settings: Settings, entry: DestinationEntry, target: Address, path: Path) -> tuple[str | None, bool]:
    """One attempt to send ``path`` to ``target`` with the options of ``entry``: (error or None, final)."""
    if target.url is not None:
        outcome = store_object(settings, target.name, target.url, path, uncompressed=entry.uncompressed)
        if outcome.stored:
            return None, False
        final = not outcome.transient if outcome.failure_reason is None else is_final_refusal(outcome.failure_reason)
        return outcome.error, final
    assert target.dicom is not None
    peer = with_tls(settings, target.dicom) if entry.tls else target.dicom
    results = send_files(
        peer, [path], calling_aet=entry.calling_aet or settings.ae_title, uncompressed=entry.uncompressed
    )
    failed = [r for r in results if not r.ok]
    if not failed:
        return None, False
    error = "; ".join(r.error or f"status {status_name(r.status)}" for r in failed)
    return error, all(is_final_refusal(r.status) for r in failed)


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
    """One attempt (C-STORE or STOW-RS) to send one report object to one destination."""
    engine, settings = self.engine, self.settings
    with session_scope(engine) as session:
        if not crud.claim_outbox_row(session, Delivery, delivery_id, LEASE):
            return
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        destination, path, attempts = delivery.destination, Path(delivery.path), delivery.attempts
        job_id = delivery.job_id
    error: str | None = None
    final = False
    try:
        entry = _entry(settings, destination)
        error, final = _send(settings, entry, _target(settings, engine, entry, job_id), path)
    except NoSender as exc:
        error, final = str(exc), True
        _audit_no_sender(settings, engine, delivery_id, job_id, destination, error)
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


def _audit_no_sender(
    settings: Settings, engine: Engine, delivery_id: int, job_id: int, destination: str, reason: str
) -> None:
    """Audit a return-to-sender delivery refused because the sender has no address."""
    build_audit_trail(settings, engine).record(
        channel="dicom",
        actor="lungcds:delivery",
        action="return-to-sender",
        target=destination,
        outcome="refused",
        detail={"delivery": delivery_id, "job": job_id, "origin": _origin(engine, job_id), "reason": reason},
    )
