"""The analysis task: one series, one job revision, thin (house rule 10).

It re-reads the job from the database, skips a revision that a later arrival superseded,
runs :func:`server.services.analysis.run_analysis`, and puts one outbox row per report object
and destination before enqueueing the deliveries after commit.
"""

from __future__ import annotations

import logging
from pathlib import Path

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError

from server import crud
from server.core.db import session_scope
from server.db_models import Job, SeriesState
from server.routing.destinations import load_destinations
from server.routing.rules import evaluate, load_rules
from server.services.analysis import run_analysis
from server.tasks.app import ANALYSIS_TASK
from server.tasks.base import LungcdsTask
from server.tasks.delivery import enqueue_delivery

__all__ = ["TRANSIENT_ERRORS", "analyse_series"]

logger = logging.getLogger(__name__)

#: Errors worth a retry with back-off; anything else fails the job at once with its message.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, ConnectionError, TimeoutError)
MAX_RETRIES = 3


@shared_task(bind=True, base=LungcdsTask, name=ANALYSIS_TASK, max_retries=MAX_RETRIES)
def analyse_series(self: LungcdsTask, job_id: int, revision: int) -> None:
    """Analyse the series of ``job_id`` if ``revision`` is still the job's current one."""
    engine, settings = self.engine, self.settings
    with session_scope(engine) as session:
        if not crud.start_job(session, job_id, revision):
            logger.info("job superseded or not queued; skipped", extra={"job": job_id, "revision": revision})
            return
        job = session.get(Job, job_id)
        assert job is not None
        series_uid = job.series_instance_uid
        headers = crud.series_headers(session, series_uid)
        paths = [Path(p) for p in crud.series_instance_paths(session, series_uid)]
    try:
        rules = load_rules(settings.rules_file, settings.max_slice_thickness_mm)
        out_dir = settings.results_dir / series_uid
        output = run_analysis(
            paths=paths,
            out_dir=out_dir,
            eligibility=evaluate(headers, rules),
            headers=headers,
            models=self.models,
            ae_title=settings.ae_title,
        )
    except TRANSIENT_ERRORS as exc:
        if self.request.retries < MAX_RETRIES:
            with session_scope(engine) as session:
                crud.requeue_after_transient_error(session, job_id, revision, str(exc))
            raise self.retry(exc=exc, countdown=10 * 2**self.request.retries) from exc
        _fail(engine, job_id, revision, f"gave up after {MAX_RETRIES} retries: {exc}")
        return
    except SoftTimeLimitExceeded:
        limit = settings.analysis_time_limit_s
        logger.error("analysis stopped at its time limit", extra={"job": job_id, "limit_s": limit})
        _fail(
            engine, job_id, revision, f"stopped at the analysis time limit of {limit} s (LUNGCDS_ANALYSIS_TIME_LIMIT_S)"
        )
        return
    except Exception as exc:  # every other failure is recorded on the job, never lost
        logger.exception("analysis failed", extra={"job": job_id})
        _fail(engine, job_id, revision, f"{type(exc).__name__}: {exc}")
        return

    delivery_ids: list[int] = []
    with session_scope(engine) as session:
        finished = crud.finish_job(
            session,
            job_id,
            revision,
            result_dir=str(output.out_dir),
            timings=output.timings,
            series_state=SeriesState.DONE if output.analysable else SeriesState.NOT_ANALYSABLE,
            reasons=output.reasons,
        )
        for step in output.stages:
            crud.add_job_event(
                session,
                job_id,
                "stage",
                {"ended_at": step.ended_at.isoformat()},
                at=step.started_at,
                name=step.name,
                seconds=(step.ended_at - step.started_at).total_seconds(),
            )
        if not finished:
            logger.info("series changed during analysis; results discarded", extra={"job": job_id})
            return
        for entry in load_destinations(settings).destinations:
            for obj in (o for o in output.dicom_outputs if o.kind in entry.outputs):
                delivery_ids.append(
                    crud.upsert_delivery(
                        session,
                        job_id=job_id,
                        destination=entry.address,
                        kind=obj.kind,
                        path=str(obj.path),
                        sop_instance_uid=obj.sop_instance_uid,
                    )
                )
    for delivery_id in delivery_ids:
        enqueue_delivery(self.app, delivery_id)
    logger.info("job done", extra={"job": job_id, "deliveries": len(delivery_ids), "timings": output.timings})


def _fail(engine: object, job_id: int, revision: int, error: str) -> None:
    with session_scope(engine) as session:  # type: ignore[arg-type]
        crud.fail_job(session, job_id, revision, error)
