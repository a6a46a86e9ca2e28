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
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

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
from server.db_models import SeriesState, utcnow
from server.routing.notice import is_chest_ct_image_series
from server.routing.rules import evaluate, load_rules

__all__ = ["EnqueueAnalysis", "SeriesIntake"]

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
        job_to_enqueue: tuple[int, int] | None = None
        with session_scope(self._engine) as session:
            if not crud.claim_series_for_finalizing(session, series_uid, trigger):
                return False
            headers = crud.series_headers(session, series_uid)
            identity_reasons = series_disagreements(headers) + crud.study_patient_conflicts(session, headers)
            decision = evaluate(headers, rules)
            reasons = identity_reasons + [r for r in decision.reasons if r not in identity_reasons]
            if not decision.analysable:
                crud.set_series_state(session, series_uid, SeriesState.IGNORED, reasons)
            elif identity_reasons or not decision.eligible:
                crud.set_series_state(session, series_uid, SeriesState.REJECTED, reasons)
                if not identity_reasons and self._settings.notify_not_analysed and is_chest_ct_image_series(headers):
                    # A job whose worker sends the not-analysed notice; the series stays rejected.
                    job = crud.queue_job(session, series_uid=series_uid, pipeline_version=PIPELINE_VERSION)
                    crud.set_series_state(session, series_uid, SeriesState.REJECTED, reasons)
                    assert job.id is not None
                    job_to_enqueue = (job.id, job.revision)
            else:
                job = crud.queue_job(session, series_uid=series_uid, pipeline_version=PIPELINE_VERSION)
                assert job.id is not None
                job_to_enqueue = (job.id, job.revision)
        logger.info(
            "series finalised",
            extra={"series": series_uid, "trigger": trigger, "queued": job_to_enqueue is not None},
        )
        if identity_reasons:
            self._audit.record(
                channel="dicom",
                actor="lungcds:routing",
                action="identity-check",
                target=series_uid,
                outcome="rejected" if decision.analysable else "ignored",
                detail={"series_instance_uid": series_uid, "reasons": identity_reasons},
            )
        if job_to_enqueue is not None:
            self._enqueue(*job_to_enqueue)
        return True
