"""Jobs: state, timings, error and deliveries."""

from __future__ import annotations

from fastapi import APIRouter, Query
from sqlalchemy import func
from sqlmodel import Session, col, select

from server.api.deps import SessionDep, Viewer
from server.api.problems import Problem
from server.api.schemas import DeliveryPublic, JobPublic, Page
from server.db_models import Delivery, Job

router = APIRouter(prefix="/jobs", tags=["jobs"])


def job_public(session: Session, job: Job) -> JobPublic:
    """The public view of a job, with its deliveries."""
    deliveries = session.exec(select(Delivery).where(Delivery.job_id == job.id).order_by(col(Delivery.id))).all()
    data = job.model_dump()
    data["deliveries"] = [DeliveryPublic(**d.model_dump()) for d in deliveries]
    return JobPublic(**data)


@router.get("", response_model=Page[JobPublic])
def list_jobs(
    session: SessionDep,
    _key: Viewer,
    state: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> Page[JobPublic]:
    """Jobs, newest first."""
    stmt = select(Job)
    if state:
        stmt = stmt.where(Job.state == state)
    total = session.exec(select(func.count()).select_from(stmt.subquery())).one()
    rows = session.exec(stmt.order_by(col(Job.id).desc()).offset(offset).limit(limit)).all()
    return Page(total=total, limit=limit, offset=offset, items=[job_public(session, r) for r in rows])


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: int, session: SessionDep, _key: Viewer) -> JobPublic:
    """One job."""
    job = session.get(Job, job_id)
    if job is None:
        raise Problem(404, "Job not found", f"no job {job_id}")
    return job_public(session, job)
