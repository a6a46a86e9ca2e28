"""The analysis task: one series, one job revision, thin (house rule 10).

It re-reads the job from the database, skips a revision that a later arrival superseded,
runs :func:`server.services.analysis.run_analysis`, and puts one outbox row per report object
and destination before enqueueing the deliveries after commit.  The transaction that settles the
job also writes its result notifications (:mod:`server.notifications`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from dicom_node.identity import series_disagreements
from server import crud
from server.core.config import Settings
from server.core.db import session_scope
from server.core.disk import disk_shortage, is_disk_full
from server.db_models import Job, NotificationEvent, SeriesState
from server.notifications.record import record_notifications
from server.routing.destinations import load_destinations
from server.routing.rules import evaluate, load_rules
from server.services.analysis import run_analysis, write_not_analysed_notice
from server.services.followup import prior_analyses
from server.tasks.app import ANALYSIS_TASK, enqueue_analysis
from server.tasks.base import LungcdsTask
from server.tasks.delivery import enqueue_delivery

__all__ = ["TRANSIENT_ERRORS", "analyse_series", "lease_kept"]

logger = logging.getLogger(__name__)

#: Errors worth a retry with back-off; anything else fails the job at once with its message.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, ConnectionError, TimeoutError)
MAX_RETRIES = 3


@shared_task(bind=True, base=LungcdsTask, name=ANALYSIS_TASK, max_retries=MAX_RETRIES)
def analyse_series(self: LungcdsTask, job_id: int, revision: int) -> None:
    """Analyse the series of ``job_id`` if ``revision`` is still the job's current one."""
    engine, settings = self.engine, self.settings
    lease = timedelta(seconds=settings.job_lease_s)
    with session_scope(engine) as session:
        claim = crud.start_job(session, job_id, revision, lease)
        if not claim.started:
            if claim.retry_in_s is not None:
                # Another attempt holds the lease: still running, or its worker just died (then the
                # lease runs out and this message takes the job over).  Look again then.
                logger.info("job held by another attempt", extra={"job": job_id, "retry_in_s": claim.retry_in_s})
                enqueue_analysis(self.app, job_id, revision, countdown=claim.retry_in_s)
            else:
                logger.info("job superseded or finished; skipped", extra={"job": job_id, "revision": revision})
            return
        job = session.get(Job, job_id)
        assert job is not None
        series_uid = job.series_instance_uid
        override = job.eligibility_override
        headers = crud.series_headers(session, series_uid)
        paths = [Path(p) for p in crud.series_instance_paths(session, series_uid)]
        # Checked when the series was finalised; checked again here, on what is stored now, because
        # a volume of two patients must never be analysed, whatever happened in between.
        conflicts = series_disagreements(headers) + crud.study_patient_conflicts(session, headers)
        if conflicts:
            if crud.fail_job(
                session,
                job_id,
                revision,
                "not analysed: the instances of the series disagree on whose images they are",
                series_state=SeriesState.REJECTED,
                reasons=conflicts,
            ):
                record_notifications(
                    session,
                    settings,
                    NotificationEvent.REJECTED,
                    job_id=job_id,
                    series_uid=series_uid,
                    reasons=conflicts,
                )
            logger.warning("job refused: identity conflict in its series", extra={"job": job_id})
            return
        study_uid = headers[0].study_instance_uid if headers else None
        priors = prior_analyses(session, study_uid) if study_uid else []
    shortage = disk_shortage(settings, settings.results_dir)
    if shortage is not None:
        _hold(engine, job_id, revision, shortage)
        return
    try:
        rules = load_rules(settings.rules_file, settings.max_slice_thickness_mm)
        eligibility = evaluate(headers, rules)
        # An admin's override (server.services.reevaluation) analyses a series the rules reject.
        analysed = eligibility.eligible or (override is not None and eligibility.analysable)
        out_dir = settings.results_dir / series_uid
        with lease_kept(engine, job_id, revision, lease):
            if analysed:
                output = run_analysis(
                    paths=paths,
                    out_dir=out_dir,
                    eligibility=eligibility,
                    headers=headers,
                    models=self.models,
                    ae_title=settings.ae_title,
                    priors=priors,
                    eligibility_override=override if not eligibility.eligible else None,
                )
            else:  # the job of a rejected chest CT (server.routing.notice): say it was not analysed, and why
                output = write_not_analysed_notice(paths, out_dir, eligibility, headers, settings.ae_title)
    except Exception as exc:  # every failure is recorded on the job, never lost
        if is_disk_full(exc):
            _hold(engine, job_id, revision, f"the disk filled up while writing results: {exc}")
            return
        if isinstance(exc, TRANSIENT_ERRORS):
            if self.request.retries < MAX_RETRIES:
                with session_scope(engine) as session:
                    crud.requeue_after_transient_error(session, job_id, revision, str(exc))
                raise self.retry(exc=exc, countdown=10 * 2**self.request.retries) from exc
            _fail(engine, settings, job_id, revision, f"gave up after {MAX_RETRIES} retries: {exc}")
            return
        if isinstance(exc, SoftTimeLimitExceeded):
            limit = settings.analysis_time_limit_s
            logger.error("analysis stopped at its time limit", extra={"job": job_id, "limit_s": limit})
            _fail(
                engine,
                settings,
                job_id,
                revision,
                f"stopped at the analysis time limit of {limit} s (LUNGCDS_ANALYSIS_TIME_LIMIT_S)",
            )
            return
        logger.exception("analysis failed", extra={"job": job_id})
        _fail(engine, settings, job_id, revision, f"{type(exc).__name__}: {exc}")
        return

    delivery_ids: list[int] = []
    with session_scope(engine) as session:
        finished = crud.finish_job(
            session,
            job_id,
            revision,
            result_dir=str(output.out_dir),
            timings=output.timings,
            series_state=(
                SeriesState.REJECTED
                if not analysed
                else SeriesState.DONE
                if output.analysable
                else SeriesState.NOT_ANALYSABLE
            ),
            reasons=output.reasons,
        )
        for step in output.stages:
            crud.add_job_event(
                session,
                job_id,
                "stage",
                {
                    "ended_at": step.ended_at.isoformat(),
                    "cpu_seconds": round(step.cpu_seconds, 3),
                    "peak_rss_bytes": step.peak_rss_bytes,
                    "forward_seconds": round(step.forward_seconds, 3),
                    "forward_calls": step.forward_calls,
                    "intervals": step.intervals,
                },
                at=step.started_at,
                name=step.name,
                seconds=step.seconds,
            )
        if not finished:
            logger.info(
                "attempt superseded (series changed or job taken over); results discarded",
                extra={"job": job_id, "revision": revision},
            )
            return
        if analysed:  # not for a notice job: that series' rejection was notified when it was routed
            record_notifications(
                session,
                settings,
                NotificationEvent.DONE if output.analysable else NotificationEvent.NOT_ANALYSABLE,
                job_id=job_id,
                series_uid=series_uid,
                reasons=output.reasons,
                result=output.result,
            )
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


@contextlib.contextmanager
def lease_kept(engine: Engine, job_id: int, revision: int, lease: timedelta) -> Iterator[None]:
    """Renew the job's lease every third of its length while the body runs (a daemon thread).

    A worker that dies stops renewing, so the lease runs out and a redelivered message can take
    the job over (:func:`server.crud.start_job`); one that lives keeps it, so a duplicate
    delivery waits instead of analysing the series a second time.
    """
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease.total_seconds() / 3):
            try:
                with session_scope(engine) as session:
                    if not crud.renew_lease(session, job_id, revision, lease):
                        return  # superseded or cancelled: nothing to hold any more
            except OperationalError as exc:  # the database is away for a moment; the next turn retries
                logger.warning("lease not renewed", extra={"job": job_id, "error": str(exc)})

    thread = threading.Thread(target=renew, name=f"lease-job-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _hold(engine: Engine, job_id: int, revision: int, why: str) -> None:
    """Hold the job until the disk is above its reserve again (the routing loop then sends it)."""
    logger.error("analysis held: disk below its reserve", extra={"job": job_id})
    with session_scope(engine) as session:
        crud.hold_job(session, job_id, revision, why)


def _fail(engine: Engine, settings: Settings, job_id: int, revision: int, error: str) -> None:
    """Fail the job for good, and notify the receivers in the same transaction."""
    with session_scope(engine) as session:
        if crud.fail_job(session, job_id, revision, error):
            record_notifications(session, settings, NotificationEvent.FAILED, job_id=job_id, reasons=[error])
