"""The audit trail: every API access and every DICOM association, in an append-only table.

Who (API key, OIDC subject, or calling AE title), when, what (route or association), from
where, and the outcome (HTTP status; released, aborted or rejected).  The table refuses UPDATE
and DELETE (migration 0002).  When an audit repository is configured, each event is also sent
as a DICOM audit message (IHE ATNA, :mod:`server.atna`).  Patient identifiers may appear in
request targets here, which is what an audit repository is for; they never go to the
application logs.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from sqlalchemy.engine import Engine

from dicom_node.tls import client_context
from server.atna import AtnaEvent, SyslogSender, audit_message, syslog_frame
from server.core.config import Settings
from server.core.db import session_scope
from server.db_models import AuditEvent, utcnow

__all__ = ["AuditTrail", "build_audit_trail"]

logger = logging.getLogger(__name__)


def _atna_event(
    channel: str, actor: str, source: str | None, action: str, target: str | None, outcome: str, receiver: str
) -> AtnaEvent:
    """Map one of our audit events onto the DICOM audit event it is (PS3.15 A.5.3)."""
    if channel == "dicom":
        requestor = actor.removeprefix("dicom:")
        series = tuple(uid for uid in (target or "").split(",") if uid)
        if outcome == "rejected":
            return AtnaEvent("user_authentication", "E", 4, requestor, source, receiver)
        return AtnaEvent(
            "instances_transferred", "C", 0 if outcome == "released" else 4, requestor, source, receiver, series
        )
    status = int(outcome) if outcome.isdigit() else 500
    code = 0 if status < 400 else 4 if status < 500 else 8
    method = action.split(" ", 1)[0]
    event, verb = ("query", "E") if method == "GET" else ("application_activity", "U")
    return AtnaEvent(event, verb, code, actor, source, receiver)


class AuditTrail:
    """Appends audit events to the database and, optionally, an ATNA audit repository.

    Parameters
    ----------
    engine : Engine
        The database holding ``audit_event``.
    repository : SyslogSender, optional
        Where DICOM audit messages go as well.
    receiver : str
        How this installation names itself in audit messages (its AE title).
    """

    def __init__(self, engine: Engine, repository: SyslogSender | None = None, receiver: str = "LUNGCDS") -> None:
        self._engine = engine
        self._repository = repository
        self._receiver = receiver
        self._source_id = f"{receiver}@{socket.gethostname()}"

    def record(
        self,
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
        """Append one event; a failure to audit is logged loudly, never raised to the caller."""
        try:
            with session_scope(self._engine) as session:
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
        if self._repository is not None:
            event = _atna_event(channel, actor, source, action, target, outcome, self._receiver)
            xml = audit_message(event, self._source_id)
            self._repository.send(syslog_frame(xml, socket.gethostname()))


def build_audit_trail(settings: Settings, engine: Engine) -> AuditTrail:
    """The audit trail of an installation: the database, plus the ATNA repository when configured."""
    repository = None
    if settings.audit_repository:
        tls = None
        if settings.audit_repository.startswith("tls://") and settings.dicom_tls_ca is not None:
            tls = client_context(
                settings.dicom_tls_ca,
                certificate=settings.dicom_tls_certificate,
                private_key=settings.dicom_tls_private_key,
            )
        repository = SyslogSender(settings.audit_repository, tls_context=tls)
    return AuditTrail(engine, repository, settings.ae_title)
