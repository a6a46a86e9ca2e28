"""What the console's dashboard shows: today's work, the queue, the workers, the disk, what waits.

"Today" is the server's local calendar day (its time zone), as the people at the hospital count
it; the database keeps UTC and is asked from local midnight in UTC.  The numbers come from the
same tables, the same heartbeat window and the same stuck-job check as ``/metrics`` and
``GET /jobs/stuck`` (:func:`server.crud.stuck_jobs`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlmodel import Session, col, select

from server import crud
from server.audit import AuditTrail
from server.core.config import Settings
from server.core.disk import disk_shortage, free_bytes, reserve_bytes
from server.db_models import Job, JobState, Series, SeriesState, WorkerHeartbeat, utcnow
from server.routing.destinations import destinations_in_force
from server.services.configuration import rules_in_force_for
from server.tasks.heartbeat import ALIVE_WITHIN
from server.tasks.queue import QueueGateway

__all__ = ["Dashboard", "WorkerSeen", "dashboard", "local_midnight"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSeen:
    """A worker process by its heartbeats."""

    hostname: str
    queues: str
    last_seen: datetime | None
    alive: bool


@dataclass(frozen=True)
class Dashboard:
    """The dashboard's numbers.

    Attributes
    ----------
    since : datetime
        Local midnight (UTC) that "today" counts from.
    received, analysed, failed, not_eligible : int
        Series first received today; jobs finished today with results, and failed today;
        series judged not eligible today.
    queue_depths : dict or None
        Messages waiting per queue; None when the broker could not be asked (``queue_problem`` says why).
    workers : sequence of WorkerSeen
        Every worker that ever sent a heartbeat.
    disk_free, disk_reserve : int
        Free bytes of the data directory's file system, and the reserve kept (``LUNGCDS_MIN_FREE_DISK_MB``).
    disk_problem : str or None
        Why the disk is below its reserve.
    oldest_waiting : Job or None
        The queued job waiting longest.
    stuck : sequence of StuckJob
        Jobs not moving (lost worker, held, no worker taking them).
    config_errors : sequence of str
        Why the rules or destinations file in force is not the admin's file.
    """

    since: datetime
    received: int
    analysed: int
    failed: int
    not_eligible: int
    queue_depths: dict[str, int] | None
    queue_problem: str | None
    workers: Sequence[WorkerSeen]
    disk_free: int
    disk_reserve: int
    disk_problem: str | None
    oldest_waiting: Job | None
    stuck: Sequence[crud.StuckJob]
    config_errors: Sequence[str]

    @property
    def workers_alive(self) -> int:
        """Workers with a heartbeat in the last 30 s."""
        return sum(worker.alive for worker in self.workers)


def local_midnight(now: datetime | None = None) -> datetime:
    """The start of the server's local day containing ``now``, as an aware datetime."""
    local = (now or utcnow()).astimezone()
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def _count(session: Session, statement: object) -> int:
    return int(session.exec(statement).one())  # type: ignore[call-overload]


def _queue_depths(queue: QueueGateway | None) -> tuple[dict[str, int] | None, str | None]:
    if queue is None:
        return None, "this API instance has no task queue configured"
    problem = queue.check()
    if problem is not None:
        return None, problem
    try:
        return queue.depths(), None
    except Exception as exc:  # noqa: BLE001 - a broker failure is shown on the page, never a crash
        logger.warning("queue depths unavailable for the console", exc_info=True)
        return None, f"{type(exc).__name__}: {exc}"


def dashboard(
    session: Session, settings: Settings, trail: AuditTrail, queue: QueueGateway | None, now: datetime | None = None
) -> Dashboard:
    """The dashboard at ``now`` (default: now)."""
    now = now or utcnow()
    since = local_midnight(now)
    received = _count(session, select(func.count()).where(col(Series.first_received_at) >= since))
    finished = {
        state: _count(session, select(func.count()).where(col(Job.state) == state, col(Job.finished_at) >= since))
        for state in (JobState.DONE, JobState.FAILED)
    }
    rejected = (col(Series.state) == SeriesState.REJECTED, col(Series.completed_at) >= since)
    not_eligible = _count(session, select(func.count()).where(*rejected))
    depths, queue_problem = _queue_depths(queue)
    cutoff = now - ALIVE_WITHIN
    workers = [
        WorkerSeen(row.hostname, row.queues, row.last_seen, row.last_seen is not None and row.last_seen >= cutoff)
        for row in session.exec(select(WorkerHeartbeat).order_by(col(WorkerHeartbeat.hostname))).all()
    ]
    oldest = session.exec(
        select(Job).where(col(Job.state) == JobState.QUEUED).order_by(col(Job.queued_at)).limit(1)
    ).first()
    rules, destinations = rules_in_force_for(settings, trail), destinations_in_force(settings, trail)
    in_force = (("rules", rules.error), ("destinations", destinations.error))
    errors = [f"{what}: {error}" for what, error in in_force if error]
    return Dashboard(
        since=since,
        received=received,
        analysed=finished[JobState.DONE],
        failed=finished[JobState.FAILED],
        not_eligible=not_eligible,
        queue_depths=depths,
        queue_problem=queue_problem,
        workers=workers,
        disk_free=free_bytes(settings)[1],
        disk_reserve=reserve_bytes(settings),
        disk_problem=disk_shortage(settings),
        oldest_waiting=oldest,
        stuck=crud.stuck_jobs(session, now, timedelta(seconds=settings.lost_job_after_s)),
        config_errors=errors,
    )
