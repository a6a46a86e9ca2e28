"""The audit trail: every API access and every DICOM association, in an append-only table.

Who (API key id and role, or the calling AE title), when, what (route or association),
from where, and the outcome (HTTP status; released, aborted or rejected).  The table refuses
UPDATE and DELETE (migration 0002).  Patient identifiers may appear in request targets here,
which is what an audit repository is for; they never go to the application logs.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.engine import Engine

from server.core.db import session_scope
from server.db_models import AuditEvent, utcnow

__all__ = ["record_audit"]

logger = logging.getLogger(__name__)


def record_audit(
    engine: Engine,
    *,
    channel: str,
    actor: str,
    action: str,
    outcome: str,
    role: str | None = None,
    source: str | None = None,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one audit event; a failure to audit is logged loudly, never raised to the caller."""
    try:
        with session_scope(engine) as session:
            session.add(
                AuditEvent(
                    at=utcnow(),
                    channel=channel,
                    actor=actor,
                    role=role,
                    source=source,
                    action=action,
                    target=target,
                    outcome=outcome,
                    detail=detail or {},
                )
            )
    except Exception:  # auditing must not take the service down; the failure itself is logged
        logger.exception("could not write an audit event", extra={"channel": channel, "action": action})
