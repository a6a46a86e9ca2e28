"""Retrieving a study already in PACS for analysis (an admin's request), on the cpu queue.

C-GET brings the instances into the spool through the same validation and indexing as the
SCP; each retrieved series is then finalised at once (the retrieval is its whole content).
C-MOVE asks the source to send the study to our AE title; it arrives through our SCP.
"""

from __future__ import annotations

import logging

from celery import shared_task

from dicom_node.retrieve import c_get, c_move, describe
from dicom_node.scu import parse_destination
from dicom_node.spool import Spool
from server.routing.intake import SeriesIntake
from server.tasks.app import RETRIEVE_TASK, enqueue_analysis
from server.tasks.base import LungcdsTask

__all__ = ["retrieve_study"]

logger = logging.getLogger(__name__)


@shared_task(bind=True, base=LungcdsTask, name=RETRIEVE_TASK)
def retrieve_study(self: LungcdsTask, source: str, study_uid: str, series_uid: str | None, method: str) -> str:
    """Retrieve with ``method`` ("get" or "move") from the configured ``source``; a one-line outcome."""
    settings = self.settings
    if source not in settings.retrieve_sources:
        raise ValueError(f"{source} is not a configured retrieve source")
    target = parse_destination(source)
    if method == "move":
        result = c_move(
            target, study_uid, series_uid, calling_aet=settings.ae_title, move_destination=settings.ae_title
        )
    else:
        intake = SeriesIntake(self.engine, settings, lambda job, rev: enqueue_analysis(self.app, job, rev))
        spool = Spool(settings.spool_dir, min_free_bytes=settings.min_free_disk_mb * 2**20)
        result = c_get(target, study_uid, series_uid, calling_aet=settings.ae_title, spool=spool, sink=intake)
        for uid in sorted(result.stored_series):
            intake.finalize(uid, trigger=f"retrieved by C-GET from {target.ae_title}")
    outcome = describe(result)
    logger.info("retrieval finished", extra={"source": source, "method": method, "outcome": outcome})
    return outcome
