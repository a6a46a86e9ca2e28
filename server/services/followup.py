"""The patient's earlier analyses, for the follow-up comparison of a new one (issue 15, item 6).

A prior is an analysed series (state ``done``, its job done, its ``result.json`` on disk with
the weight-free ``headline``) of *another* study whose patient has the same Patient ID and Issuer
of Patient ID, and no other birth date when both are known (an identifier reused for another
person must not become somebody's history).  Which one is compared, and whether it can be, is
decided by :func:`models.qct.followup.compare`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from models.findings import PriorAnalysis
from server.db_models import Job, JobState, Series, SeriesState, Study

__all__ = ["prior_analyses"]

logger = logging.getLogger(__name__)


def _same(a: str | None, b: str | None) -> bool:
    return (a or "").strip() == (b or "").strip()


def _prior(study: Study, series: Series, job: Job) -> PriorAnalysis | None:
    """The prior analysis recorded in a done job's result.json, or None when it cannot serve."""
    try:
        result: dict[str, Any] = json.loads((Path(str(job.result_dir)) / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.info("prior analysis unreadable; not used", extra={"job": job.id, "error": type(exc).__name__})
        return None
    if not result.get("analysable", False) or not isinstance(result.get("headline"), dict):
        return None
    sr = (result.get("outputs") or {}).get("sr") or {}
    return PriorAnalysis(
        study_instance_uid=study.study_instance_uid,
        series_instance_uid=series.series_instance_uid,
        study_date=study.study_date,
        headline=result["headline"],
        acquisition=result.get("acquisition") or {},
        sr_sop_instance_uid=sr.get("sop_instance_uid"),
        sr_series_instance_uid=sr.get("series_instance_uid"),
        accession_number=study.accession_number,
    )


def prior_analyses(session: Session, study_instance_uid: str) -> list[PriorAnalysis]:
    """Every earlier analysis of the patient of ``study_instance_uid`` in other studies (any order).

    Empty when the study has no Patient ID: without it no history can be told apart.
    """
    study = session.get(Study, study_instance_uid)
    if study is None or not (study.patient_id or "").strip():
        return []
    rows = session.exec(
        select(Study, Series, Job)
        .join(Series, col(Series.study_instance_uid) == col(Study.study_instance_uid))
        .join(Job, col(Job.series_instance_uid) == col(Series.series_instance_uid))
        .where(
            col(Study.patient_id) == study.patient_id,
            col(Study.study_instance_uid) != study_instance_uid,
            col(Series.state) == SeriesState.DONE,
            col(Series.purged_at).is_(None),
            col(Job.state) == JobState.DONE,
            col(Job.result_dir).is_not(None),
        )
    ).all()
    priors = []
    for other, series, job in rows:
        if not _same(other.issuer_of_patient_id, study.issuer_of_patient_id):
            continue
        if (
            other.patient_birth_date
            and study.patient_birth_date
            and other.patient_birth_date != study.patient_birth_date
        ):
            continue
        prior = _prior(other, series, job)
        if prior is not None:
            priors.append(prior)
    return priors
