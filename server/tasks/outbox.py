"""The outbox pump shared by every outbox table: lease the due rows, one queue message each.

An outbox row (:data:`server.crud.OutboxTable`: report deliveries, result notifications) is
written in the transaction of the change it reports and sent by a task that claims it for one
attempt (:func:`server.crud.claim_outbox_row`).  The pump of the ``serve`` process leases every
due row by pushing its next attempt past the lease, so a second pump (or the next tick) does not
enqueue it again while its message waits; a row whose message or sender was lost becomes due
again when the lease runs out, so nothing is lost.  Failed attempts are retried with the
same capped exponential back-off (:func:`retry_delay`).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.engine import Engine

from server import crud
from server.core.db import session_scope
from server.db_models import utcnow

__all__ = ["LEASE", "lease_due", "retry_delay"]

#: How long a claimed or leased row is left to its sender before another may take it.
LEASE = timedelta(minutes=5)


def retry_delay(attempts: int, cap_seconds: float) -> timedelta:
    """Exponential back-off from 5 s, capped at ``cap_seconds``."""
    return timedelta(seconds=min(cap_seconds, 5.0 * 2 ** max(0, attempts - 1)))


def lease_due(engine: Engine, table: crud.OutboxTable, lease: timedelta) -> list[int]:
    """Lease every due row of ``table`` for ``lease``; the ids this caller won (to enqueue after commit)."""
    now = utcnow()
    with session_scope(engine) as session:
        due = crud.due_outbox_rows(session, table, now, lease)
        return [row_id for row_id in due if crud.lease_outbox_row(session, table, row_id, now + lease)]
