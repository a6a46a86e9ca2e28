"""Studies with filtering by patient ID, accession number and study date range."""

from __future__ import annotations

from fastapi import APIRouter, Query
from sqlalchemy import func
from sqlmodel import col, select

from server.api.deps import SessionDep, Viewer
from server.api.listing import order_by
from server.api.problems import Problem
from server.api.schemas import Page, StudyPublic
from server.db_models import Series, Study

router = APIRouter(prefix="/studies", tags=["studies"])


def _public(study: Study, series_count: int) -> StudyPublic:
    return StudyPublic(
        study_instance_uid=study.study_instance_uid,
        patient_id=study.patient_id,
        patient_name=study.patient_name,
        accession_number=study.accession_number,
        study_date=study.study_date,
        study_description=study.study_description,
        series_count=series_count,
    )


_STUDY_SORT = {
    "created_at": col(Study.created_at),
    "study_date": col(Study.study_date),
    "patient_id": col(Study.patient_id),
    "accession_number": col(Study.accession_number),
}


@router.get("", response_model=Page[StudyPublic])
def list_studies(
    session: SessionDep,
    _key: Viewer,
    patient_id: str | None = None,
    accession_number: str | None = None,
    date_from: str | None = Query(None, pattern=r"^\d{8}$", description="YYYYMMDD"),
    date_to: str | None = Query(None, pattern=r"^\d{8}$", description="YYYYMMDD"),
    sort: str = Query("-created_at", max_length=40),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=2**62),
) -> Page[StudyPublic]:
    """Studies, newest first."""
    stmt = select(Study)
    if patient_id:
        stmt = stmt.where(Study.patient_id == patient_id)
    if accession_number:
        stmt = stmt.where(Study.accession_number == accession_number)
    if date_from:
        stmt = stmt.where(col(Study.study_date) >= date_from)
    if date_to:
        stmt = stmt.where(col(Study.study_date) <= date_to)
    total = session.exec(select(func.count()).select_from(stmt.subquery())).one()
    rows = session.exec(stmt.order_by(order_by(sort, _STUDY_SORT)).offset(offset).limit(limit)).all()
    counts = _series_counts(session, [r.study_instance_uid for r in rows])
    items = [_public(r, counts.get(r.study_instance_uid, 0)) for r in rows]
    return Page(total=total, limit=limit, offset=offset, items=items)


def _series_counts(session: SessionDep, uids: list[str]) -> dict[str, int]:
    if not uids:
        return {}
    rows = session.exec(
        select(Series.study_instance_uid, func.count())
        .where(col(Series.study_instance_uid).in_(uids))
        .group_by(Series.study_instance_uid)
    ).all()
    return {uid: count for uid, count in rows}


@router.get("/{study_uid}", response_model=StudyPublic)
def get_study(study_uid: str, session: SessionDep, _key: Viewer) -> StudyPublic:
    """One study."""
    study = session.get(Study, study_uid)
    if study is None:
        raise Problem(404, "Study not found", f"no study with Study Instance UID {study_uid}")
    return _public(study, _series_counts(session, [study_uid]).get(study_uid, 0))
