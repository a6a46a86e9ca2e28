"""The outbox pump shared by every outbox table: lease the due rows, one queue message each.

An outbox row (:data:`server.crud.OutboxTable`: report deliveries, result notifications) is
written in the transaction of the change it reports and sent by a task that claims it for one
attempt (:func:`server.crud.claim_outbox_row`).  The pump of the ``serve`` process leases every
due row by pushing its next attempt past the lease, so a second pump (or the next tick) does not
enqueue it again while its message waits; a row whose message or sender was lost becomes due
again when the lease runs out, so nothing is lost.  Failed attempts are retried with the
deliveries' capped exponential back-off (:func:`server.tasks.delivery.retry_delay`).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.engine import Engine

from server import crud
from server.core.db import session_scope
from server.db_models import utcnow

__all__ = ["lease_due"]


def lease_due(engine: Engine, table: crud.OutboxTable, lease: timedelta) -> list[int]:
    """Lease every due row of ``table`` for ``lease``; the ids this caller won (to enqueue after commit)."""
    now = utcnow()
    with session_scope(engine) as session:
        due = crud.due_outbox_rows(session, table, now, lease)
        return [row_id for row_id in due if crud.lease_outbox_row(session, table, row_id, now + lease)]
