"""A job's timeline and an admin's actions on it, whoever asks (REST API, HTML console).

Re-queue analyses the series again (a new revision; outputs replace the earlier ones), cancel
stops a queued or running job (a running analysis finishes, its results are discarded), resend
puts the job's report objects back in the outbox.  Each commits its change; the front end has
audited the request before (:func:`server.api.auditing.record_change`), and refusals are
:class:`~server.services.admin.ServiceError` with nothing changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from server import crud
from server.core.config import Settings
from server.db_models import Delivery, Job, JobEvent, Series
from server.routing.destinations import load_destinations, parse_address
from server.routing.intake import EnqueueAnalysis
from server.services.admin import Conflict, Invalid, NotFound

__all__ = ["TimelineStep", "cancel_job", "deliveries_of", "get_job", "job_timeline", "requeue_job", "resend_job"]


@dataclass(frozen=True)
class TimelineStep:
    """One step in the life of a job's series: received, complete, queued, started, stages, deliveries.

    ``name`` is the stage or model of a stage event, the destination of a delivery; ``seconds``
    how long a stage took.
    """

    at: datetime
    kind: str
    name: str | None = None
    seconds: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def get_job(session: Session, job_id: int) -> Job:
    """The job; :class:`NotFound` when there is none."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound("Job not found", f"no job {job_id}")
    return job


def deliveries_of(session: Session, job_id: int) -> list[Delivery]:
    """The job's report objects in the outbox, one per object and destination, in the order they were put there."""
    return list(session.exec(select(Delivery).where(Delivery.job_id == job_id).order_by(col(Delivery.id))).all())


def job_timeline(session: Session, job: Job) -> list[TimelineStep]:
    """Everything that happened to the job's series, oldest first."""
    steps: list[TimelineStep] = []
    series = session.get(Series, job.series_instance_uid)
    if series is not None:
        for kind, at in (
            ("first_instance_received", series.first_received_at),
            ("last_instance_received", series.last_received_at),
            ("series_complete", series.completed_at),
        ):
            if at is not None:
                steps.append(TimelineStep(at=at, kind=kind, detail={"trigger": series.completion_trigger}))
    events = session.exec(select(JobEvent).where(JobEvent.job_id == job.id).order_by(col(JobEvent.id))).all()
    steps.extend(
        TimelineStep(at=e.at, kind=e.kind, name=e.name, seconds=e.seconds, detail=e.detail)
        for e in events
        if e.at is not None
    )
    return sorted(steps, key=lambda step: step.at)


def requeue_job(session: Session, job_id: int, enqueue: EnqueueAnalysis) -> Job:
    """Analyse the job's series again: a new revision, committed, then enqueued (:class:`NotFound`)."""
    get_job(session, job_id)
    job = crud.requeue_job(session, job_id)
    assert job is not None and job.id is not None
    session.commit()
    enqueue(job.id, job.revision)
    return job


def cancel_job(session: Session, job_id: int) -> Job:
    """Cancel a queued or running job (:class:`NotFound`; :class:`Conflict` in any other state)."""
    job = get_job(session, job_id)
    if not crud.cancel_job(session, job_id):
        raise Conflict(
            "Job not cancellable", f"job {job_id} is {job.state}; only queued or running jobs can be cancelled"
        )
    session.commit()
    session.refresh(job)
    return job


def resend_job(session: Session, settings: Settings, job_id: int, destination: str | None) -> Job:
    """Put the job's report objects back in the outbox, for one configured destination (``AET@host:port``) or all.

    Raises
    ------
    NotFound
        No such job.
    Invalid
        ``destination`` is no address, or not a configured destination.
    Conflict
        The job has no report objects for it.
    """
    job = get_job(session, job_id)
    if destination is not None:
        try:
            destination = str(parse_address(destination))
        except ValueError as exc:
            raise Invalid("Invalid destination", str(exc)) from exc
        known = {entry.address for entry in load_destinations(settings).destinations}
        if destination not in known:
            raise Invalid("Unknown destination", f"{destination} is not a configured destination")
    if not crud.resend_deliveries(session, job_id, destination):
        raise Conflict(
            "Nothing to re-send", f"job {job_id} has no report objects for {destination or 'any destination'}"
        )
    session.commit()
    session.refresh(job)
    return job
