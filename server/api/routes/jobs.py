"""Jobs: state, timings, error, deliveries and result notifications."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as FastAPIPath
from pydantic import BaseModel, Field
from sqlmodel import Session

from server import crud
from server.api.deps import Admin, SessionDep, SettingsDep, Viewer, json_body, json_request_body, task_queue
from server.api.listing import Instant
from server.api.routes.notifications import notification_public
from server.api.schemas import DeliveryPublic, JobPublic, Page
from server.db_models import Job, utcnow
from server.services import jobs as job_actions
from server.services.listings import JobFilter, find_jobs

router = APIRouter(prefix="/jobs", tags=["jobs"])

#: A job id: positive and within the 64-bit integer range of SQLite and PostgreSQL.
JobId = Annotated[int, FastAPIPath(ge=1, le=2**62, description="Job id")]


def job_public(session: Session, job: Job) -> JobPublic:
    """The public view of a job, with its deliveries and result notifications (newest first)."""
    assert job.id is not None
    deliveries = job_actions.deliveries_of(session, job.id)
    _, notifications = crud.list_notifications(session, job_id=job.id, limit=1000)
    data = job.model_dump()
    data["deliveries"] = [DeliveryPublic(**d.model_dump()) for d in deliveries]
    data["notifications"] = [notification_public(n) for n in notifications]
    return JobPublic(**data)


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
    filters = JobFilter(state=state, queued_from=queued_from, queued_to=queued_to)
    listing = find_jobs(session, filters, sort=sort, limit=limit, offset=offset)
    return Page(total=listing.total, limit=limit, offset=offset, items=[job_public(session, r) for r in listing.items])


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
    return job_public(session, job_actions.get_job(session, job_id))


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


@router.get("/{job_id}/timeline", response_model=list[TimelineEntry])
def get_timeline(job_id: JobId, session: SessionDep, _key: Viewer) -> list[TimelineEntry]:
    """Everything that happened to the job's series, oldest first."""
    steps = job_actions.job_timeline(session, job_actions.get_job(session, job_id))
    return [TimelineEntry(**asdict(step)) for step in steps]


@router.post("/{job_id}/requeue", response_model=JobPublic)
def requeue(job_id: JobId, request: Request, session: SessionDep, _key: Admin) -> JobPublic:
    """Analyse the job's series again (a new revision; outputs replace the earlier ones)."""
    job_actions.get_job(session, job_id)  # an unknown job is 404 even on an API without a queue
    return job_public(session, job_actions.requeue_job(session, job_id, task_queue(request).enqueue_analysis))


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel(job_id: JobId, session: SessionDep, _key: Admin) -> JobPublic:
    """Cancel a queued or running job; a running analysis finishes but its results are discarded."""
    return job_public(session, job_actions.cancel_job(session, job_id))


@router.post("/{job_id}/resend", response_model=JobPublic, openapi_extra=json_request_body(ResendRequest))
def resend(
    job_id: JobId,
    _key: Admin,
    body: Annotated[ResendRequest, Depends(json_body(ResendRequest))],
    session: SessionDep,
    settings: SettingsDep,
) -> JobPublic:
    """Put the job's report objects back in the outbox, for one configured destination or all."""
    return job_public(session, job_actions.resend_job(session, settings, job_id, body.destination))
