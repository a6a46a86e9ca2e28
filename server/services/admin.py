"""What every admin write service shares: the errors it refuses with, and the audit event it writes.

The write services (:mod:`server.services.configuration`, :mod:`server.services.reevaluation`,
:mod:`server.services.jobs`) and the read services beside them are called by the REST API and by
the HTML console (:mod:`server.console`), so that each behaviour has one code path whoever asks.
They raise the errors below, which each front end shows its own way (the API answers them as
RFC 9457 problem details, :func:`server.api.problems.install_problem_handlers`; the console as
pages, :mod:`server.console.app`).

Every change is written to the audit trail before it is made (:func:`audit_change`): channel
``admin``, outcome ``requested``, the actor, and what the change does in ``detail`` (the rules
before and after, the destination, the override and its reason).  When that event cannot be
written nothing is changed (:class:`server.audit.AuditUnavailable`).  The front end writes the
outcome, as the API's middleware does for every request (:mod:`server.api.auditing`).
"""

from __future__ import annotations

from typing import Any

from server.audit import REQUESTED, AuditTrail

__all__ = ["ADMIN_CHANNEL", "Conflict", "Gone", "Invalid", "NotFound", "ServiceError", "audit_change"]

#: Audit channel of the changes the write services make.
ADMIN_CHANNEL = "admin"


class ServiceError(Exception):
    """A refused request: a short ``title`` and a ``detail`` saying why, and what to do instead.

    Nothing was changed when one is raised.
    """

    def __init__(self, title: str, detail: str) -> None:
        super().__init__(detail)
        self.title, self.detail = title, detail


class NotFound(ServiceError):
    """The thing named does not exist (HTTP 404)."""


class Conflict(ServiceError):
    """The request clashes with the current state: a duplicate, or a series in the wrong state (HTTP 409)."""


class Invalid(ServiceError):
    """The request itself is wrong: a missing or unknown rule, an invalid destination (HTTP 422)."""


class Gone(ServiceError):
    """The thing named existed but was removed on purpose: results removed by retention (HTTP 410)."""


def audit_change(trail: AuditTrail, *, actor: str, action: str, target: str, detail: dict[str, Any]) -> None:
    """Write the event of a change about to be made; :class:`~server.audit.AuditUnavailable` when it cannot be.

    Call it after every check that can refuse the change and before anything is written, so
    that no change is made unaudited.  On SQLite it must also come before the caller's session
    writes: the trail writes through its own connection, which would wait for that session's lock.
    """
    trail.record_or_raise(
        channel=ADMIN_CHANNEL,
        actor=actor,
        action=action,
        target=target,
        outcome=REQUESTED,
        detail=detail,
        change=True,
    )
