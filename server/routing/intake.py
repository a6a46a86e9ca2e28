"""From stored instances to analysis jobs: the SCP's sink, series completion and routing.

A series is finalised when its content says it is complete and the association that brought
it was released, or else when it has been idle for ``LUNGCDS_SERIES_IDLE_SECONDS``.
Finalising applies the eligibility rules: an eligible series gets its (idempotent) job queued
after the transaction commits; any other records every reason.
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from dicom_node.completeness import assess_series
from dicom_node.scp import AssociationInfo
from dicom_node.spool import StoredInstance
from models import PIPELINE_VERSION
from server import crud
from server.audit import AuditTrail
from server.core.config import Settings
from server.core.db import session_scope
from server.db_models import SeriesState, utcnow
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

    def instance_stored(self, stored: StoredInstance, assoc: AssociationInfo | None) -> None:
        """Index one durably stored instance (called before the SCP answers success)."""
        with session_scope(self._engine) as session:
            reopened = crud.index_instance(
                session,
                header=stored.header,
                path=str(stored.path),
                size=stored.size,
                calling_aet=assoc.calling_aet if assoc else None,
            )
        if reopened:
            logger.info("series reopened by a late instance", extra={"series": stored.header.series_instance_uid})

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

    def instance_refused(self, sop_instance_uid: str, status: int, reason: str, assoc: AssociationInfo) -> None:
        """Audit an instance the SCP refused, with its status and reason, for the sender's operators."""
        self._audit_dicom(
            assoc,
            "c-store",
            "refused",
            {
                "association": assoc.id,
                "sop_instance_uid": sop_instance_uid,
                "status": f"0x{status:04X}",
                "reason": reason,
            },
        )

    def file_refused(self, path: Path, status: int, reason: str) -> None:
        """Audit a file a folder import refused, as :meth:`instance_refused` does for the SCP."""
        self._audit.record(
            channel="dicom",
            actor=f"import:{getpass.getuser()}",
            source=str(path.parent),
            action="import",
            outcome="refused",
            detail={"file": path.name, "status": f"0x{status:04X}", "reason": reason},
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
        rules = load_rules(self._settings.rules_file, self._settings.max_slice_thickness_mm)
        if {h.sop_class_uid for h in headers} <= set(rules.analysed_sop_classes):
            geometry = assess_series(headers, spacing_tolerance=rules.spacing_tolerance)
            if not geometry.complete:
                logger.info(
                    "series not complete by content; waiting for more instances or the idle timeout",
                    extra={"series": series_uid, "why": "; ".join(geometry.reasons)},
                )
                return False
        return self.finalize(series_uid, trigger=trigger)

    def finalize_idle(self) -> int:
        """Finalise every series idle for longer than the configured time; how many."""
        cutoff = utcnow() - timedelta(seconds=self._settings.series_idle_seconds)
        with session_scope(self._engine) as session:
            uids = crud.idle_series(session, cutoff)
        return sum(self.finalize(uid, trigger="idle timeout") for uid in uids)

    def finalize(self, series_uid: str, trigger: str) -> bool:
        """Decide eligibility and queue or reject; only one concurrent caller acts."""
        rules = load_rules(self._settings.rules_file, self._settings.max_slice_thickness_mm)
        job_to_enqueue: tuple[int, int] | None = None
        with session_scope(self._engine) as session:
            if not crud.claim_series_for_finalizing(session, series_uid, trigger):
                return False
            decision = evaluate(crud.series_headers(session, series_uid), rules)
            if not decision.analysable:
                crud.set_series_state(session, series_uid, SeriesState.IGNORED, decision.reasons)
            elif not decision.eligible:
                crud.set_series_state(session, series_uid, SeriesState.REJECTED, decision.reasons)
            else:
                job = crud.queue_job(session, series_uid=series_uid, pipeline_version=PIPELINE_VERSION)
                assert job.id is not None
                job_to_enqueue = (job.id, job.revision)
        logger.info(
            "series finalised",
            extra={"series": series_uid, "trigger": trigger, "queued": job_to_enqueue is not None},
        )
        if job_to_enqueue is not None:
            self._enqueue(*job_to_enqueue)
        return True
