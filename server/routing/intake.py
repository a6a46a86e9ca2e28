"""From stored instances to analysis jobs: the SCP's sink, series completion and routing.

A series is finalised when its content says it is complete and the association that brought
it was released, or else when it has been idle for ``LUNGCDS_SERIES_IDLE_SECONDS``.
Finalising applies the eligibility rules: an eligible series gets its (idempotent) job queued
after the transaction commits; any other records every reason.

Whose images a series holds is checked twice (:mod:`dicom_node.identity`). As each instance
arrives, against what its series and study already hold: a disagreement is recorded on the
series and audited with both identities, and the instance is kept (nothing acknowledged is
lost). When the series is finalised, over all its instances: a series whose instances disagree
on patient, study, modality or frame of reference is rejected with every disagreement named,
and never analysed.  A SOP Instance UID already stored in another series is refused before it
is written (:meth:`SeriesIntake.admit`).

Finalising is :func:`decide_series` then :func:`route_series`; an admin's re-evaluation of a
rejected series under changed rules (:mod:`server.services.reevaluation`) goes through the
same two functions.
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from dicom_node.completeness import assess_series
from dicom_node.header import InstanceHeader
from dicom_node.identity import series_disagreements
from dicom_node.scp import AssociationInfo
from dicom_node.spool import OutOfResources, StoredInstance, conflicting_instance, elsewhere
from models import PIPELINE_VERSION
from server import crud
from server.audit import AuditTrail
from server.core.config import Settings
from server.core.db import session_scope
from server.db_models import NotificationEvent, SeriesState, utcnow
from server.notifications.record import record_notifications
from server.routing.notice import is_chest_ct_image_series
from server.routing.rules import Eligibility, EligibilityRules, evaluate, load_rules

__all__ = ["EnqueueAnalysis", "RoutingDecision", "SeriesIntake", "decide_series", "route_series"]

logger = logging.getLogger(__name__)

#: Called after commit with (job id, job revision) to put the analysis on the queue.
EnqueueAnalysis = Callable[[int, int], None]


class SeriesIntake:
    """Indexes stored instances and turns complete series into jobs or recorded rejections.

    Implements :class:`dicom_node.scp.InstanceSink`; also used by the folder import.
    """

    def __init__(
        self, engine: Engine, settings: Settings, enqueue: EnqueueAnalysis, audit: AuditTrail | None = None
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._enqueue = enqueue
        self._audit = audit or AuditTrail(engine, receiver=settings.ae_title)

    def admit(self, header: InstanceHeader) -> None:
        """Refuse, before it is written, an instance whose SOP Instance UID is indexed in another series or study.

        Raises
        ------
        dicom_node.validation.InvalidInstance
            ``0xC111`` (the SOP Instance UID is in use), naming both series; ``detail`` carries both
            identities for the audit trail.
        dicom_node.spool.OutOfResources
            ``0xA700`` when the database cannot be read (the sender retries later).
        """
        try:
            with session_scope(self._engine) as session:
                existing = crud.instance_at(session, str(header.sop_instance_uid))
        except SQLAlchemyError as exc:  # the database is away: a transient refusal, the sender retries
            raise OutOfResources(
                f"the index cannot be read to check the SOP Instance UID: {type(exc).__name__}"
            ) from exc
        refusal = elsewhere(existing[0], header) if existing is not None else None
        if refusal is not None:
            raise refusal

    def instance_stored(self, stored: StoredInstance, assoc: AssociationInfo | None) -> None:
        """Index one durably stored instance (called before the SCP answers success).

        Raises
        ------
        dicom_node.validation.InvalidInstance
            When another thread indexed the same SOP Instance UID in another series between
            :meth:`admit` and now; the caller discards the file it wrote and refuses.
        """
        header = stored.header
        with session_scope(self._engine) as session:
            indexed = crud.index_instance(
                session,
                header=header,
                path=str(stored.path),
                size=stored.size,
                calling_aet=assoc.calling_aet if assoc else None,
            )
        if indexed.stored_elsewhere is not None:
            raise elsewhere(indexed.stored_elsewhere, header) or conflicting_instance(
                "already stored at another place", indexed.stored_elsewhere, header
            )
        if indexed.conflicts:
            logger.warning(
                "instance disagrees with its series on identity", extra={"series": header.series_instance_uid}
            )
            self._audit.record(
                channel="dicom",
                actor=f"dicom:{assoc.calling_aet}" if assoc else f"import:{getpass.getuser()}",
                source=f"{assoc.peer_host}:{assoc.peer_port}" if assoc else None,
                action="identity-check",
                target=header.series_instance_uid,
                outcome="conflict",
                detail={
                    "sop_instance_uid": header.sop_instance_uid,
                    "series_instance_uid": header.series_instance_uid,
                    "conflicts": list(indexed.conflicts),
                },
            )
        if indexed.reopened:
            logger.info("series reopened by a late instance", extra={"series": header.series_instance_uid})

    def association_ended(self, assoc: AssociationInfo, series_uids: frozenset[str], released: bool) -> None:
        """A released association may complete its series; an aborted one waits for idle."""
        self._audit_dicom(
            assoc,
            "association",
            "released" if released else "aborted",
            {"association": assoc.id, "called_aet": assoc.called_aet, "series": len(series_uids)},
            target=",".join(sorted(series_uids)) or None,
        )
        if not released:
            logger.info("association aborted; its series wait for the idle timeout", extra={"assoc": assoc.id})
            return
        for uid in sorted(series_uids):
            self.complete_if_content_says_so(uid, trigger="association released")

    def instance_refused(
        self,
        sop_instance_uid: str,
        status: int,
        reason: str,
        assoc: AssociationInfo,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        """Audit an instance the SCP refused, with its status, reason and ``detail`` (e.g. both identities)."""
        self._audit_dicom(
            assoc,
            "c-store",
            "refused",
            {
                **(detail or {}),
                "association": assoc.id,
                "sop_instance_uid": sop_instance_uid,
                "status": f"0x{status:04X}",
                "reason": reason,
            },
        )

    def file_refused(self, path: Path, status: int, reason: str, detail: Mapping[str, object] | None = None) -> None:
        """Audit a file a folder import refused, as :meth:`instance_refused` does for the SCP."""
        self._audit.record(
            channel="dicom",
            actor=f"import:{getpass.getuser()}",
            source=str(path.parent),
            action="import",
            outcome="refused",
            detail={**(detail or {}), "file": path.name, "status": f"0x{status:04X}", "reason": reason},
        )

    def association_rejected(self, assoc: AssociationInfo, reason: str) -> None:
        """Audit an association the SCP refused (e.g. a calling AE title not on the allow-list)."""
        self._audit_dicom(assoc, "association", "rejected", {"reason": reason, "called_aet": assoc.called_aet})

    def locate_instance(self, sop_instance_uid: str) -> Path | None:
        """The spool file of an indexed SOP Instance UID (what Storage Commitment checks), or None.

        The row outlives its file when the retention policy removed it; the caller then finds no
        file (failure reason ``0x0112``).
        """
        with Session(self._engine) as session:
            found = crud.instance_at(session, sop_instance_uid)
        return Path(found[1]) if found is not None else None

    def storage_commitment(self, requester: str, peer: str | None, outcome: str, detail: Mapping[str, object]) -> None:
        """Audit a Storage Commitment event (:class:`dicom_node.commitment_scp.CommitmentAudit`)."""
        self._audit.record(
            channel="dicom",
            actor=f"dicom:{requester}",
            source=peer,
            action="storage-commitment",
            outcome=outcome,
            target=str(detail.get("transaction_uid") or "") or None,
            detail=dict(detail),
        )

    def _audit_dicom(
        self, assoc: AssociationInfo, action: str, outcome: str, detail: dict[str, Any], target: str | None = None
    ) -> None:
        """One audit event of the DICOM channel, by the association's calling AE title and address."""
        self._audit.record(
            channel="dicom",
            actor=f"dicom:{assoc.calling_aet}",
            source=f"{assoc.peer_host}:{assoc.peer_port}",
            action=action,
            target=target,
            outcome=outcome,
            detail=detail,
        )

    def complete_if_content_says_so(self, series_uid: str, trigger: str) -> bool:
        """Finalise the series when its slice positions show it is complete."""
        with session_scope(self._engine) as session:
            headers = crud.series_headers(session, series_uid)
        if not headers:
            return False
        rules = load_rules(self._settings.rules_file, self._settings.max_slice_thickness_mm, self._audit)
        if {h.sop_class_uid for h in headers} <= set(rules.analysed_sop_classes):
            geometry = assess_series(headers, spacing_tolerance=rules.spacing_tolerance)
            if not geometry.complete:
                logger.info(
                    "series not complete by content; waiting for more instances or the idle timeout",
                    extra={"series": series_uid, "why": "; ".join(geometry.reasons)},
                )
                return False
        return self.finalize(series_uid, trigger=trigger)

    def finalize_idle(self, busy: frozenset[str] = frozenset()) -> int:
        """Finalise every series idle for longer than the configured time; how many.

        ``busy`` series (an association that is sending them is still open) are never finalised
        by the idle timer, however long the sender pauses between instances: the end of their
        association decides, or the idle time after it.
        """
        cutoff = utcnow() - timedelta(seconds=self._settings.series_idle_seconds)
        with session_scope(self._engine) as session:
            uids = crud.idle_series(session, cutoff)
        return sum(self.finalize(uid, trigger="idle timeout") for uid in uids if uid not in busy)

    def finalize(self, series_uid: str, trigger: str) -> bool:
        """Decide eligibility and queue or reject; only one concurrent caller acts."""
        rules = load_rules(self._settings.rules_file, self._settings.max_slice_thickness_mm, self._audit)
        with session_scope(self._engine) as session:
            if not crud.claim_series_for_finalizing(session, series_uid, trigger):
                return False
            decision = decide_series(session, series_uid, rules)
            job_to_enqueue = route_series(
                session, series_uid, decision, notify_not_analysed=self._settings.notify_not_analysed
            )
            if not decision.analysed and decision.eligibility.analysable:  # rejected (an ignored series is not)
                record_notifications(
                    session,
                    self._settings,
                    NotificationEvent.REJECTED,
                    job_id=job_to_enqueue[0] if job_to_enqueue is not None else None,
                    series_uid=series_uid,
                    reasons=decision.reasons,
                )
        logger.info(
            "series finalised",
            extra={"series": series_uid, "trigger": trigger, "queued": job_to_enqueue is not None},
        )
        if decision.identity_reasons:
            self._audit.record(
                channel="dicom",
                actor="lungcds:routing",
                action="identity-check",
                target=series_uid,
                outcome="rejected" if decision.eligibility.analysable else "ignored",
                detail={"series_instance_uid": series_uid, "reasons": list(decision.identity_reasons)},
            )
        if job_to_enqueue is not None:
            self._enqueue(*job_to_enqueue)
        return True


@dataclass(frozen=True)
class RoutingDecision:
    """What the rules and the identity checks say of one stored series, before anything is recorded.

    Attributes
    ----------
    eligibility : Eligibility
        The rules' decision, with every reason.
    identity_reasons : tuple of str
        How the instances disagree on patient, study, modality or frame of reference, or how the
        series' patient differs from its study's (checked whatever the rules say).
    modalities : tuple of str
        The distinct Modality values of the instances.
    chest_ct_images : bool
        A chest CT image series (:func:`server.routing.notice.is_chest_ct_image_series`).
    """

    eligibility: Eligibility
    identity_reasons: tuple[str, ...]
    modalities: tuple[str, ...]
    chest_ct_images: bool

    @property
    def reasons(self) -> tuple[str, ...]:
        """Every reason the series is not analysed, identity first."""
        return self.identity_reasons + tuple(r for r in self.eligibility.reasons if r not in self.identity_reasons)

    @property
    def analysed(self) -> bool:
        """True when the series goes to analysis as it is."""
        return self.eligibility.analysable and self.eligibility.eligible and not self.identity_reasons

    def override_refusals(self) -> tuple[str, ...]:
        """Why no admin may have this series analysed against the rules; empty when an override may.

        An override waives technical criteria (thickness, coverage, spacing ...), never patient
        safety: a volume of two patients or studies would be reported under one name, and the
        pipeline measures CT images only.
        """
        refusals = list(self.identity_reasons)
        if not self.eligibility.analysable:
            refusals.extend(self.eligibility.reasons)
        if self.modalities != ("CT",):
            refusals.append(f"modality {', '.join(self.modalities) or '(none)'}: only CT series are analysed")
        return tuple(refusals)


def decide_series(session: Session, series_uid: str, rules: EligibilityRules) -> RoutingDecision:
    """Apply ``rules`` and the identity checks to what is stored of ``series_uid`` (reads only)."""
    headers = crud.series_headers(session, series_uid)
    identity = series_disagreements(headers) + crud.study_patient_conflicts(session, headers)
    return RoutingDecision(
        eligibility=evaluate(headers, rules),
        identity_reasons=tuple(identity),
        modalities=tuple(sorted({(h.modality or "").strip().upper() or "(none)" for h in headers})),
        chest_ct_images=is_chest_ct_image_series(headers),
    )


def route_series(
    session: Session,
    series_uid: str,
    decision: RoutingDecision,
    *,
    notify_not_analysed: bool,
    eligibility_override: dict[str, Any] | None = None,
) -> tuple[int, int] | None:
    """Record ``decision`` on the series; (job, revision) to enqueue after commit, if a job was queued.

    An analysed series, or one an admin overrides (``eligibility_override``), gets its job queued;
    any other is ``ignored`` (never analysable) or ``rejected`` with every reason, and a rejected
    chest CT gets the job that sends the not-analysed notice when ``notify_not_analysed``.

    Raises
    ------
    ValueError
        For an override of a series :meth:`RoutingDecision.override_refusals` refuses (callers
        check first; this keeps the rule in the one path that queues).
    """
    if eligibility_override is not None and decision.override_refusals():
        raise ValueError("; ".join(decision.override_refusals()))
    if decision.analysed or eligibility_override is not None:
        job = crud.queue_job(
            session,
            series_uid=series_uid,
            pipeline_version=PIPELINE_VERSION,
            eligibility_override=eligibility_override,
        )
        assert job.id is not None
        return job.id, job.revision
    if not decision.eligibility.analysable:
        crud.set_series_state(session, series_uid, SeriesState.IGNORED, decision.reasons)
        return None
    crud.set_series_state(session, series_uid, SeriesState.REJECTED, decision.reasons)
    if decision.identity_reasons or not notify_not_analysed or not decision.chest_ct_images:
        return None
    # A job whose worker sends the not-analysed notice; queuing it leaves the series rejected.
    job = crud.queue_job(session, series_uid=series_uid, pipeline_version=PIPELINE_VERSION)
    assert job.id is not None
    return job.id, job.revision
