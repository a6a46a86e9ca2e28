"""Re-evaluating a series that was not analysed, under the rules in force now (REST API, HTML console).

A series is judged once, when it is complete; a series rejected under rules that an admin has
since changed would otherwise never be analysed.  :func:`reevaluate_series` routes a
``rejected`` or ``ignored`` series again, through the functions finalising uses
(:func:`server.routing.intake.decide_series`, :func:`server.routing.intake.route_series`):

* eligible now: its job is queued exactly as a fresh series' would be;
* still not eligible: it stays rejected (or ignored), its reasons become those of the rules in
  force, and nothing is queued (the not-analysed notice went out when it was first finalised);
* with an :class:`EligibilityOverride`: queued although technical criteria fail, the override
  (reason, by whom, when, and the reasons overridden) recorded on the job
  (``Job.eligibility_override``), in its timeline, in the audit trail and in result.json.  Never
  when its instances disagree on whose images they are, nor for a series that is not a CT
  image series (:meth:`server.routing.intake.RoutingDecision.override_refusals`).

A series that is queued, being analysed or analysed already is analysed again with its job's
re-queue, not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlmodel import Session

from server import crud
from server.audit import AuditTrail
from server.core.admin_file import refuse_control_characters
from server.core.config import Settings
from server.db_models import Series, SeriesState, utcnow
from server.routing.intake import EnqueueAnalysis, decide_series, route_series
from server.routing.rules import load_rules
from server.services.admin import Conflict, NotFound, audit_change

__all__ = ["MAX_REASON_LENGTH", "REEVALUABLE_STATES", "EligibilityOverride", "Reevaluation", "reevaluate_series"]

#: States of a series that was not analysed and may be judged again.
REEVALUABLE_STATES: tuple[str, ...] = (SeriesState.REJECTED, SeriesState.IGNORED)
#: Longest override reason: a sentence or two for the audit trail and the report, not a document.
MAX_REASON_LENGTH = 500


class EligibilityOverride(BaseModel):
    """An admin's decision to analyse a series although technical eligibility criteria fail."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        min_length=1,
        max_length=MAX_REASON_LENGTH,
        description="Why the series is analysed against the rules (kept in the audit trail, the job and result.json)",
    )

    @field_validator("reason")
    @classmethod
    def _says_why(cls, value: str) -> str:
        """No control characters (they would rewrite the log or the report they are shown in), not blank."""
        stripped = refuse_control_characters(value).strip()
        if not stripped:
            raise ValueError("the reason must say why the rules are overridden")
        return stripped


@dataclass(frozen=True)
class Reevaluation:
    """What a re-evaluation decided.

    Attributes
    ----------
    eligible : bool
        Eligible under the rules in force now (False also when an override queued it).
    queued : bool
        Its job was queued (eligible now, or overridden).
    reasons : tuple of str
        Every reason it is not eligible now; empty when it is.
    job_id : int or None
        The job queued.
    eligibility_override : dict or None
        The override recorded on the job, when one was needed and granted.
    """

    eligible: bool
    queued: bool
    reasons: tuple[str, ...]
    job_id: int | None
    eligibility_override: dict[str, Any] | None


def _reevaluable(series: Series) -> None:
    """:class:`Conflict` saying what to do instead, unless the series was not analysed and can be judged again."""
    uid = series.series_instance_uid
    if series.purged_at is not None:
        raise Conflict(
            "Images removed", f"the images of series {uid} were removed by the retention policy; send it again"
        )
    if series.state in (SeriesState.RECEIVING, SeriesState.FINALIZING):
        raise Conflict("Series not complete", f"series {uid} is still being received; it is judged when complete")
    if series.state not in REEVALUABLE_STATES:
        raise Conflict(
            "Series not rejected",
            f"series {uid} is {series.state}, not {' or '.join(REEVALUABLE_STATES)}; "
            "to analyse it again, re-queue its job (POST /jobs/{id}/requeue)",
        )


def reevaluate_series(
    session: Session,
    settings: Settings,
    trail: AuditTrail,
    actor: str,
    series_uid: str,
    *,
    override: EligibilityOverride | None,
    enqueue: EnqueueAnalysis,
) -> Reevaluation:
    """Judge a rejected or ignored series again under the rules in force; queue it when eligible or overridden.

    Commits ``session`` and enqueues the job after the commit.  An override given for a series
    that is eligible anyway is not needed, and not recorded.

    Raises
    ------
    NotFound
        No such series.
    Conflict
        The series is not rejected or ignored (queued, analysed ...: re-queue its job), its
        images were removed, it changed meanwhile, or an override is refused (identity
        conflict, not a CT image series), with every reason.
    server.audit.AuditUnavailable
        The re-evaluation could not be audited; nothing changed.
    """
    series = session.get(Series, series_uid)
    if series is None:
        raise NotFound("Series not found", f"no series with Series Instance UID {series_uid}")
    _reevaluable(series)
    rules = load_rules(settings.rules_file, settings.max_slice_thickness_mm, trail)
    decision = decide_series(session, series_uid, rules)
    grant: dict[str, Any] | None = None
    if override is not None and not decision.analysed:
        # What the instances said on arrival counts too: it is never cleared, and never waived.
        arrived = [f"on arrival: {c}" for c in series.identity_conflicts]
        refusals = (*decision.override_refusals(), *arrived)
        if refusals:
            raise Conflict(
                "Override refused",
                "an override waives technical criteria, never these: " + "; ".join(refusals),
            )
        grant = {"reason": override.reason, "by": actor, "at": utcnow().isoformat(), "reasons": list(decision.reasons)}
    audit_change(
        trail,
        actor=actor,
        action="re-evaluate series",
        target=series_uid,
        detail={
            "from_state": series.state,
            "eligible": decision.analysed,
            "reasons": list(decision.reasons),
            "eligibility_override": grant,
        },
    )
    if not crud.claim_series_for_reevaluation(session, series_uid, REEVALUABLE_STATES, series.reopen_count):
        session.rollback()
        raise Conflict("Series changed", f"series {series_uid} changed while it was re-evaluated; look at it again")
    job = route_series(session, series_uid, decision, notify_not_analysed=False, eligibility_override=grant)
    if job is not None:
        crud.add_job_event(
            session,
            job[0],
            "reevaluated",
            {"by": actor, "eligible": decision.analysed, "reasons": list(decision.reasons)},
        )
    session.commit()
    if job is not None:
        enqueue(*job)
    return Reevaluation(
        eligible=decision.analysed,
        queued=job is not None,
        reasons=decision.reasons,
        job_id=job[0] if job is not None else None,
        eligibility_override=grant,
    )
