"""Which analyses go first: a STAT accession or a series from a configured source AE.

A radiologist waiting on a trauma or ICU scan should not wait behind a night's batch of routine
screening CTs.  The site names what is urgent (issue 9, "Queue semantics"): calling AE titles
whose every series is urgent (``LUNGCDS_PRIORITY_CALLING_AETS``, e.g. the emergency CT), and a
regular expression on the Accession Number (``LUNGCDS_PRIORITY_ACCESSION_PATTERN``, e.g. ``^STAT``)
for sites whose RIS marks STAT orders there.  The broker then hands urgent jobs out first; how a
broker expresses that differs (:func:`message_priority`).
"""

from __future__ import annotations

import re

from sqlmodel import Session

from server.core.config import Settings
from server.db_models import Job, Series, Study

__all__ = ["ROUTINE", "URGENT", "is_urgent", "message_priority"]

URGENT, ROUTINE = "urgent", "routine"


def is_urgent(session: Session, job_id: int, settings: Settings) -> bool:
    """True when the job's series came from a priority AE or its accession matches the STAT pattern."""
    job = session.get(Job, job_id)
    series = session.get(Series, job.series_instance_uid) if job is not None else None
    if series is None:
        return False
    if series.calling_aet and series.calling_aet.strip() in {a.strip() for a in settings.priority_calling_aets}:
        return True
    pattern = settings.priority_accession_pattern
    if not pattern:
        return False
    study = session.get(Study, series.study_instance_uid)
    return bool(study is not None and study.accession_number and re.search(pattern, study.accession_number))


def message_priority(broker_url: str, urgent: bool) -> int | None:
    """The Celery message priority that makes ``broker_url`` deliver urgent jobs first.

    RabbitMQ delivers the highest number first (queues declared with ``x-max-priority`` 9);
    kombu's Redis transport keeps one list per priority step and reads 0 first, and a message
    without a priority counts as 0, so routine jobs must say 9 explicitly.  The embedded SQLite
    transport has no priorities (None: first in, first out).
    """
    if broker_url.startswith(("amqp", "pyamqp")):
        return 9 if urgent else 0
    if broker_url.startswith(("redis", "rediss")):
        return 0 if urgent else 9
    return None
