"""Queue overview for admins: messages waiting per queue and the workers alive."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlmodel import col, select

from server.api.deps import Admin, SessionDep
from server.api.problems import Problem
from server.db_models import WorkerHeartbeat, utcnow
from server.tasks.heartbeat import ALIVE_WITHIN

router = APIRouter(prefix="/queues", tags=["queues"])


class WorkerPublic(BaseModel):
    """A worker process seen through its heartbeats."""

    hostname: str
    queues: str
    pid: int
    started_at: datetime | None
    last_seen: datetime | None
    alive: bool


class QueueOverview(BaseModel):
    """Waiting messages per queue, and every worker that ever beat, alive or not."""

    depths: dict[str, int]
    workers: list[WorkerPublic]
    workers_alive: int


@router.get("", response_model=QueueOverview)
def overview(request: Request, session: SessionDep, _key: Admin) -> QueueOverview:
    """Depth per queue and workers alive (heartbeat within the last 30 s)."""
    queue = request.app.state.queue
    if queue is None:
        raise Problem(503, "No queue", "this API instance has no task queue configured")
    problem = queue.check()
    if problem is not None:
        raise Problem(503, "Broker unreachable", problem)
    cutoff = utcnow() - ALIVE_WITHIN
    rows = session.exec(select(WorkerHeartbeat).order_by(col(WorkerHeartbeat.hostname))).all()
    workers = [
        WorkerPublic(**row.model_dump(), alive=row.last_seen is not None and row.last_seen >= cutoff) for row in rows
    ]
    return QueueOverview(depths=queue.depths(), workers=workers, workers_alive=sum(w.alive for w in workers))
