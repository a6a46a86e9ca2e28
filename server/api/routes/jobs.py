"""Jobs: state, timings, error, deliveries and result notifications."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as FastAPIPath
from pydantic import BaseModel, Field
from sqlalchemy import func
from sqlmodel import Session, col, select

from dicom_node.scu import parse_destination
from server import crud
from server.api.deps import Admin, SessionDep, SettingsDep, Viewer, json_body, json_request_body
from server.api.listing import Instant, order_by
from server.api.problems import Problem
from server.api.routes.notifications import notification_public
from server.api.schemas import DeliveryPublic, JobPublic, Page
from server.db_models import Delivery, Job, JobEvent, Series, utcnow
from server.routing.destinations import load_destinations
from server.tasks.queue import QueueGateway

router = APIRouter(prefix="/jobs", tags=["jobs"])

#: A job id: positive and within the 64-bit integer range of SQLite and PostgreSQL.
JobId = Annotated[int, FastAPIPath(ge=1, le=2**62, description="Job id")]


def job_public(session: Session, job: Job) -> JobPublic:
    """The public view of a job, with its deliveries and result notifications (newest first)."""
    deliveries = session.exec(select(Delivery).where(Delivery.job_id == job.id).order_by(col(Delivery.id))).all()
    _, notifications = crud.list_notifications(session, job_id=job.id, limit=1000)
    data = job.model_dump()
    data["deliveries"] = [DeliveryPublic(**d.model_dump()) for d in deliveries]
    data["notifications"] = [notification_public(n) for n in notifications]
    return JobPublic(**data)


_JOB_SORT = {
    "id": col(Job.id),
    "queued_at": col(Job.queued_at),
    "started_at": col(Job.started_at),
    "finished_at": col(Job.finished_at),
    "state": col(Job.state),
}


@router.get("", response_model=Page[JobPublic])
def list_jobs(
    session: SessionDep,
    _key: Viewer,
    state: str | None = Query(None, max_length=32),
    queued_from: Instant | None = None,
    queued_to: Instant | None = None,
    sort: str = Query("-id", max_length=40),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=2**62),
) -> Page[JobPublic]:
    """Jobs, filtered by state and queue time; newest first by default."""
    stmt = select(Job)
    if state:
        stmt = stmt.where(Job.state == state)
    if queued_from:
        stmt = stmt.where(col(Job.queued_at) >= queued_from)
    if queued_to:
        stmt = stmt.where(col(Job.queued_at) <= queued_to)
    total = session.exec(select(func.count()).select_from(stmt.subquery())).one()
    rows = session.exec(stmt.order_by(order_by(sort, _JOB_SORT)).offset(offset).limit(limit)).all()
    return Page(total=total, limit=limit, offset=offset, items=[job_public(session, r) for r in rows])


class StuckJobPublic(BaseModel):
    """A job that is not moving: its worker was lost, it is held (e.g. disk full), or no worker takes it."""

    job_id: int
    series_instance_uid: str
    state: str
    reason: str = Field(description="lease_expired, held or waiting")
    why: str
    since: datetime | None


@router.get("/stuck", response_model=list[StuckJobPublic])
def list_stuck_jobs(session: SessionDep, settings: SettingsDep, _key: Viewer) -> list[StuckJobPublic]:
    """Jobs that are not moving right now, oldest first (the server takes over lost workers' jobs itself)."""
    waiting_after = timedelta(seconds=settings.lost_job_after_s)
    return [StuckJobPublic(**asdict(j)) for j in crud.stuck_jobs(session, utcnow(), waiting_after)]


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: JobId, session: SessionDep, _key: Viewer) -> JobPublic:
    """One job."""
    job = session.get(Job, job_id)
    if job is None:
        raise Problem(404, "Job not found", f"no job {job_id}")
    return job_public(session, job)


class TimelineEntry(BaseModel):
    """One step in the life of a job's series: received, complete, queued, started, stages, deliveries."""

    at: datetime
    kind: str
    name: str | None = Field(
        default=None, description="The stage or model of a stage event; the destination of a delivery"
    )
    seconds: float | None = Field(default=None, description="How long the stage took")
    detail: dict[str, Any] = {}


class ResendRequest(BaseModel):
    """Which destination to re-send to (``AET@host:port``); all of them when absent."""

    destination: str | None = Field(None, max_length=200)


def _get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise Problem(404, "Job not found", f"no job {job_id}")
    return job


def _queue(request: Request) -> QueueGateway:
    queue: QueueGateway | None = request.app.state.queue
    if queue is None:
        raise Problem(503, "No queue", "this API instance has no task queue configured")
    return queue


@router.get("/{job_id}/timeline", response_model=list[TimelineEntry])
def get_timeline(job_id: JobId, session: SessionDep, _key: Viewer) -> list[TimelineEntry]:
    """Everything that happened to the job's series, oldest first."""
    job = _get_job(session, job_id)
    entries: list[TimelineEntry] = []
    series = session.get(Series, job.series_instance_uid)
    if series is not None:
        for kind, at in (
            ("first_instance_received", series.first_received_at),
            ("last_instance_received", series.last_received_at),
            ("series_complete", series.completed_at),
        ):
            if at is not None:
                entries.append(TimelineEntry(at=at, kind=kind, detail={"trigger": series.completion_trigger}))
    events = session.exec(select(JobEvent).where(JobEvent.job_id == job_id).order_by(col(JobEvent.id))).all()
    entries.extend(
        TimelineEntry(at=e.at, kind=e.kind, name=e.name, seconds=e.seconds, detail=e.detail)
        for e in events
        if e.at is not None
    )
    return sorted(entries, key=lambda e: e.at)


@router.post("/{job_id}/requeue", response_model=JobPublic)
def requeue(job_id: JobId, request: Request, session: SessionDep, _key: Admin) -> JobPublic:
    """Analyse the job's series again (a new revision; outputs replace the earlier ones)."""
    _get_job(session, job_id)
    queue = _queue(request)
    job = crud.requeue_job(session, job_id)
    assert job is not None and job.id is not None
    session.commit()
    queue.enqueue_analysis(job.id, job.revision)
    return job_public(session, job)


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel(job_id: JobId, session: SessionDep, _key: Admin) -> JobPublic:
    """Cancel a queued or running job; a running analysis finishes but its results are discarded."""
    job = _get_job(session, job_id)
    if not crud.cancel_job(session, job_id):
        raise Problem(
            409, "Job not cancellable", f"job {job_id} is {job.state}; only queued or running jobs can be cancelled"
        )
    session.commit()
    session.refresh(job)
    return job_public(session, job)


@router.post("/{job_id}/resend", response_model=JobPublic, openapi_extra=json_request_body(ResendRequest))
def resend(
    job_id: JobId,
    _key: Admin,
    body: Annotated[ResendRequest, Depends(json_body(ResendRequest))],
    session: SessionDep,
    settings: SettingsDep,
) -> JobPublic:
    """Put the job's report objects back in the outbox, for one configured destination or all."""
    job = _get_job(session, job_id)
    if body.destination is not None:
        try:
            destination = str(parse_destination(body.destination))
        except ValueError as exc:
            raise Problem(422, "Invalid destination", str(exc)) from exc
        known = {entry.address for entry in load_destinations(settings).destinations}
        if destination not in known:
            raise Problem(422, "Unknown destination", f"{destination} is not a configured destination")
    else:
        destination = None
    if not crud.resend_deliveries(session, job_id, destination):
        raise Problem(
            409, "Nothing to re-send", f"job {job_id} has no report objects for {destination or 'any destination'}"
        )
    session.commit()
    session.refresh(job)
    return job_public(session, job)
