"""Data retention: received images and results are removed after a configured number of days.

Never before delivery: a series' files go only when its analysis is over (done, not
analysable, rejected, ignored, failed or cancelled), it was completed more than
``LUNGCDS_RETENTION_DAYS`` ago, and every report object of it has been sent (or refused for
good) to every destination.  The database keeps the series, its job, deliveries and audit trail
(metadata, no pixels); ``purged_at`` records when the files went, and the API says so.
"""

from __future__ import annotations

import logging
import shutil
from datetime import timedelta
from pathlib import Path

from sqlalchemy import exists, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from server.core.config import Settings
from server.core.db import session_scope
from server.db_models import Delivery, DeliveryState, Instance, Job, Series, SeriesState, utcnow

__all__ = ["purge_expired"]

logger = logging.getLogger(__name__)

_FINISHED = (
    SeriesState.DONE,
    SeriesState.NOT_ANALYSABLE,
    SeriesState.REJECTED,
    SeriesState.IGNORED,
    SeriesState.FAILED,
    SeriesState.CANCELLED,
)


def _expired(session: Session, settings: Settings) -> list[str]:
    cutoff = utcnow() - timedelta(days=settings.retention_days)
    undelivered = (
        select(Delivery.id)
        .join(Job, col(Job.id) == col(Delivery.job_id))
        .where(
            col(Job.series_instance_uid) == col(Series.series_instance_uid),
            col(Delivery.state).not_in((DeliveryState.SENT, DeliveryState.REFUSED)),
        )
    )
    rows = session.exec(
        select(Series.series_instance_uid).where(
            col(Series.state).in_(_FINISHED),
            col(Series.completed_at) < cutoff,
            col(Series.purged_at).is_(None),
            ~exists(undelivered),
        )
    ).all()
    return list(rows)


def _remove(path: Path, root: Path) -> None:
    """Remove a file or folder that lies under ``root`` (never anything outside the data dir)."""
    resolved = path.resolve()
    if root.resolve() not in resolved.parents:
        logger.error("refusing to remove %s: outside %s", resolved, root)
        return
    if resolved.is_dir():
        shutil.rmtree(resolved, ignore_errors=True)
    else:
        resolved.unlink(missing_ok=True)


def purge_expired(engine: Engine, settings: Settings) -> int:
    """Remove the spool files and results of every expired series; how many series were purged."""
    if settings.retention_days <= 0:
        return 0
    with Session(engine) as session:
        expired = _expired(session, settings)
    for uid in expired:
        with session_scope(engine) as session:
            paths = session.exec(select(Instance.path).where(Instance.series_instance_uid == uid)).all()
            results = session.exec(select(Job.result_dir).where(Job.series_instance_uid == uid)).all()
            for path in paths:
                _remove(Path(path), settings.spool_dir)
            for folder in results:
                if folder:
                    _remove(Path(folder), settings.results_dir)
            session.execute(update(Series).where(col(Series.series_instance_uid) == uid).values(purged_at=utcnow()))
        logger.info("series files removed by the retention policy", extra={"series": uid})
    return len(expired)
