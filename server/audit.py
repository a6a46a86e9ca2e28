"""The audit trail: every API access, every DICOM association and every rejected admin file.

Who (API key, OIDC subject, or calling AE title), when, what (route or association), from
where, and the outcome (HTTP status; released, aborted or rejected).  The table refuses UPDATE
and DELETE (migration 0002).  When an audit repository is configured, each completed event is
also sent as a DICOM audit message (IHE ATNA, :mod:`server.atna`).  Patient identifiers may
appear in request targets here, which is what an audit repository is for; they never go to the
application logs, and credentials go to neither.

Two ways to write: :meth:`AuditTrail.record` never raises (the DICOM channel: the SCP must
answer its peer whatever happens to the trail) and :meth:`AuditTrail.record_or_raise` raises
:class:`AuditUnavailable` (the API: a request whose access cannot be audited is refused).  An
API change is written twice, sharing a request id: ``requested`` before it runs, so that no
change is ever made unaudited, then its HTTP status.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from dicom_node.tls import client_context
from server.atna import AtnaEvent, SyslogSender, audit_message, syslog_frame
from server.core.config import Settings
from server.core.db import session_scope
from server.core.disk import disk_shortage
from server.db_models import AuditEvent, utcnow

__all__ = ["AUDIT_FLOOR_SHARE", "REQUESTED", "AuditTrail", "AuditUnavailable", "build_audit_trail"]

#: Share of the free-disk reserve below which the trail refuses even reads: they may use the
#: upper half of the reserve (small rows; results stay readable while space is freed), never all.
AUDIT_FLOOR_SHARE = 0.5

#: Outcome of the event written before an API change runs (its HTTP status follows in a second event).
REQUESTED = "requested"

logger = logging.getLogger(__name__)


def _atna_event(
    channel: str, actor: str, source: str | None, action: str, target: str | None, outcome: str, receiver: str
) -> AtnaEvent:
    """Map one of our audit events onto the DICOM audit event it is (PS3.15 A.5.3)."""
    if channel == "config":
        return AtnaEvent("application_activity", "E", 4, actor, source, receiver)
    if channel == "dicom":
        requestor = actor.removeprefix("dicom:")
        series = tuple(uid for uid in (target or "").split(",") if uid)
        if outcome == "rejected":
            return AtnaEvent("user_authentication", "E", 4, requestor, source, receiver)
        if action == "storage-commitment":  # no instances move: an activity, failed when refused or undelivered
            failed = outcome in ("refused", "undelivered")
            return AtnaEvent("application_activity", "E", 4 if failed else 0, requestor, source, receiver)
        return AtnaEvent(
            "instances_transferred", "C", 0 if outcome == "released" else 4, requestor, source, receiver, series
        )
    status = int(outcome) if outcome.isdigit() else 500
    code = 0 if status < 400 else 4 if status < 500 else 8
    method = action.split(" ", 1)[0]
    event, verb = ("query", "E") if method == "GET" else ("application_activity", "U")
    return AtnaEvent(event, verb, code, actor, source, receiver)


class AuditUnavailable(Exception):
    """An audit event was not written: ``status`` is 507 below the disk reserve, 503 otherwise."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


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
    disk_shortage : callable, optional
        Given a share of the free-space reserve, says why the data disk is below it, or None:
        changes are refused below the reserve, every other request below
        :data:`AUDIT_FLOOR_SHARE` of it (:meth:`record_or_raise`).
    """

    def __init__(
        self,
        engine: Engine,
        repository: SyslogSender | None = None,
        receiver: str = "LUNGCDS",
        disk_shortage: Callable[[float], str | None] | None = None,
    ) -> None:
        self._engine = engine
        self._repository = repository
        self._receiver = receiver
        self._disk_shortage = disk_shortage
        self._source_id = f"{receiver}@{socket.gethostname()}"
        self._rejected_files: set[tuple[str, str]] = set()

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
            self.record_or_raise(
                channel=channel,
                actor=actor,
                action=action,
                outcome=outcome,
                role=role,
                source=source,
                target=target,
                detail=detail,
            )
        except Exception:  # the DICOM channel must not fail its peer; the failure itself is logged
            logger.exception("could not write an audit event", extra={"channel": channel, "action": action})

    def record_or_raise(
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
        change: bool = False,
    ) -> None:
        """Append one event or raise :class:`AuditUnavailable` saying why it was not written.

        With ``change`` (the event announces a change), the event is refused while the data
        disk is at its reserve: what the change would write, and the trail itself, must not
        fill the file system.  Any other event (a read) is refused below
        :data:`AUDIT_FLOOR_SHARE` of the reserve: its row is small, and a radiologist should
        still read results while an administrator frees space, but the trail too must stop
        before the disk is full.
        """
        if self._disk_shortage is not None:
            shortage = self._disk_shortage(1.0 if change else AUDIT_FLOOR_SHARE)
            if shortage is not None:
                what = "changes are" if change else "requests are"
                raise AuditUnavailable(507, f"{what} refused while the disk is full: {shortage}")
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
        except (SQLAlchemyError, OSError) as exc:
            raise AuditUnavailable(503, f"the audit trail cannot be written ({type(exc).__name__})") from exc
        if self._repository is not None and outcome != REQUESTED:
            event = _atna_event(channel, actor, source, action, target, outcome, self._receiver)
            xml = audit_message(event, self._source_id)
            self._repository.send(syslog_frame(xml, socket.gethostname()))

    def record_rejected_file(self, path: Path, error: str, fingerprint: str, in_force: str) -> None:
        """Audit (once per broken version and process) an admin file found invalid, and what is in force instead.

        Parameters
        ----------
        path : pathlib.Path
            The file (rules, destinations).
        error : str
            Why it was rejected.
        fingerprint : str
            Identifies this broken version (:attr:`server.core.admin_file.Loaded.fingerprint`).
        in_force : str
            What applies instead, e.g. "last good copy".
        """
        if (str(path), fingerprint) in self._rejected_files:
            return
        self._rejected_files.add((str(path), fingerprint))
        logger.error("admin file rejected", extra={"file": str(path), "in_force": in_force})
        self.record(
            channel="config",
            actor="lungcds",
            action="read admin file",
            target=str(path),
            outcome="rejected",
            detail={"error": error, "in_force": in_force, "sha256": fingerprint},
        )


def build_audit_trail(settings: Settings, engine: Engine) -> AuditTrail:
    """The audit trail of an installation: the database, the ATNA repository when configured, the disk reserve."""
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
    return AuditTrail(engine, repository, settings.ae_title, lambda share: disk_shortage(settings, share=share))
