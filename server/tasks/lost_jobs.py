"""No job is stranded: the server itself recovers work that its worker or its broker lost (issue 14).

The database, not the broker, is the record of what must be analysed.  The routing loop of
``lungcds serve`` runs these checks in every mode (embedded, Redis, RabbitMQ):

* :func:`take_over_lost_jobs`: a *running* job whose lease ran out lost its worker (killed,
  out of memory, host gone) while the broker still holds its message out of sight (the embedded
  broker for ever, Redis for its visibility timeout).  It is queued again at a new revision and
  sent; the lost attempt, should it come back, is superseded and its results discarded, so one
  set of reports is delivered.
* :func:`resend_lost_jobs`: a *queued* job whose message the broker forgot (a restart without
  persistence) is sent again once the analysis queue is empty and its message is older than
  ``LUNGCDS_LOST_JOB_AFTER_S``.  A message that was only reserved by a busy worker becomes a
  harmless duplicate: the first attempt claims the job, the other skips it
  (:func:`server.crud.start_job`).
* :func:`resume_held_jobs`: jobs held because the disk was below its reserve are sent again
  once it is not.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.engine import Engine

from server import crud
from server.core.config import Settings
from server.core.db import session_scope
from server.core.disk import disk_shortage
from server.db_models import utcnow
from server.tasks.app import GPU_QUEUE, LungcdsCelery, enqueue_analysis
from server.tasks.queue import CeleryQueue

__all__ = ["resend_lost_jobs", "resume_held_jobs", "take_over_lost_jobs"]

logger = logging.getLogger(__name__)


def take_over_lost_jobs(app: LungcdsCelery, engine: Engine) -> int:
    """Queue again and send every running job whose lease has expired; how many."""
    with session_scope(engine) as session:
        taken = crud.take_over_lost_jobs(session, utcnow())
    for job_id, revision in taken:
        logger.warning("running job lost its worker (lease expired); taken over", extra={"job": job_id})
        enqueue_analysis(app, job_id, revision)
    return len(taken)


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


def resume_held_jobs(app: LungcdsCelery, engine: Engine, settings: Settings) -> int:
    """Send the jobs held for disk space once the results disk is above its reserve; how many."""
    if disk_shortage(settings, settings.results_dir) is not None:
        return 0
    with session_scope(engine) as session:
        released = crud.release_held_jobs(session)
    for job_id, revision in released:
        logger.info("held job released: disk space is back above the reserve", extra={"job": job_id})
        enqueue_analysis(app, job_id, revision)
    return len(released)
