"""Queued jobs whose broker message was lost are sent again (issue 9, "broker restart → no job lost").

The database, not the broker, is the record of what must be analysed: a job stays ``queued``
until an attempt claims it.  A broker that restarts without persistence (Redis without an
append-only file, for instance) forgets the messages it held, and those jobs would wait for ever.
So the routing loop looks, when the analysis queue is empty, for queued jobs whose last message
is older than ``LUNGCDS_LOST_JOB_AFTER_S`` and sends them again.  A message that was not lost but
only reserved by a busy worker becomes a duplicate, which is harmless: the first attempt claims
the job and the other waits for its lease and then skips it (:func:`server.crud.start_job`).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.engine import Engine

from server import crud
from server.core.config import Settings
from server.core.db import session_scope
from server.db_models import utcnow
from server.tasks.app import GPU_QUEUE, LungcdsCelery, enqueue_analysis
from server.tasks.queue import CeleryQueue

__all__ = ["resend_lost_jobs"]

logger = logging.getLogger(__name__)


def resend_lost_jobs(app: LungcdsCelery, engine: Engine, settings: Settings) -> int:
    """Send again the queued jobs without a message in an empty analysis queue; how many."""
    if CeleryQueue(app).depths().get(GPU_QUEUE, 0):
        return 0  # messages are waiting: the queue is draining, nothing is known to be lost
    cutoff = utcnow() - timedelta(seconds=settings.lost_job_after_s)
    with session_scope(engine) as session:
        lost = crud.unsent_queued_jobs(session, cutoff)
        for job_id, revision in lost:
            crud.add_job_event(session, job_id, "resent", {"revision": revision, "why": "no message in the queue"})
    for job_id, revision in lost:
        logger.warning("queued job had no message in the broker; sent again", extra={"job": job_id})
        enqueue_analysis(app, job_id, revision)
    return len(lost)
