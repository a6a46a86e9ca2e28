"""Database operations shared by the SCP intake, the tasks, the API and the CLI.

Every state change that could race (two triggers finalising one series, two workers picking
up one job, two senders claiming one delivery) is a conditional UPDATE whose row count says
who won, so it holds on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Executable, and_, func, or_, update
from sqlmodel import Session, col, select

from dicom_node.header import InstanceHeader
from dicom_node.identity import PATIENT_FIELDS, identity_of, instance_disagreements
from server.core.db import insert_ignore
from server.db_models import (
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobEvent,
    JobState,
    Notification,
    Series,
    SeriesState,
    Study,
    utcnow,
)

__all__ = [
    "OutboxTable",
    "add_notification",
    "list_notifications",
    "claim_outbox_row",
    "due_outbox_rows",
    "lease_outbox_row",
    "notification_failed",
    "notification_refused",
    "notification_sent",
    "changed_rows",
    "claim_series_for_finalizing",
    "claim_series_for_reevaluation",
    "delivery_failed",
    "delivery_refused",
    "delivery_sent",
    "fail_job",
    "add_job_event",
    "requeue_job",
    "cancel_job",
    "resend_deliveries",
    "finish_job",
    "idle_series",
    "index_instance",
    "instance_at",
    "held_identity_conflicts",
    "study_patient_conflicts",
    "Indexed",
    "job_is_current",
    "queue_job",
    "requeue_after_transient_error",
    "series_headers",
    "series_instance_paths",
    "set_series_state",
    "start_job",
    "mark_sent",
    "unsent_queued_jobs",
    "renew_lease",
    "take_over_lost_jobs",
    "hold_job",
    "release_held_jobs",
    "stuck_jobs",
    "StuckJob",
    "Claim",
    "upsert_delivery",
]

_OPEN_STATES = (SeriesState.RECEIVING, SeriesState.FINALIZING)
#: The distinct identity conflicts kept per series (each names one attribute and two values).
_MAX_IDENTITY_CONFLICTS = 20


def changed_rows(session: Session, statement: Executable) -> int:
    """Execute a DML statement and return how many rows it changed (who won a race)."""
    result = cast(CursorResult[Any], session.execute(statement))
    return int(result.rowcount)


@dataclass(frozen=True)
class Indexed:
    """What indexing one stored instance found.

    ``conflicts`` lists how the instance disagrees with the identity its series (or the study's
    patient) already held, in words; ``stored_elsewhere`` is the header of the same SOP Instance
    UID indexed earlier at another place (another series), which the caller must refuse.
    """

    new: bool
    reopened: bool = False
    conflicts: tuple[str, ...] = ()
    stored_elsewhere: InstanceHeader | None = None


def instance_at(session: Session, sop_instance_uid: str) -> tuple[InstanceHeader, str] | None:
    """The indexed header and spool path of a SOP Instance UID, if it is indexed."""
    row = session.exec(
        select(Instance.header, Instance.path).where(Instance.sop_instance_uid == sop_instance_uid)
    ).first()
    return None if row is None else (InstanceHeader.from_json(row[0]), row[1])


def held_identity_conflicts(session: Session, header: InstanceHeader) -> list[str]:
    """How an arriving instance disagrees with its series' first instance and its study's patient."""
    first = session.exec(
        select(Instance.header)
        .where(Instance.series_instance_uid == header.series_instance_uid)
        .order_by(col(Instance.received_at), col(Instance.sop_instance_uid))
        .limit(1)
    ).first()
    conflicts: list[str] = []
    if first is not None:
        held = identity_of(InstanceHeader.from_json(first))
        conflicts += [f"{c} (by the series)" for c in instance_disagreements(held, header)]
    study = session.get(Study, header.study_instance_uid)
    if study is not None:
        patient = identity_of(_study_patient(study))
        conflicts += [
            f"{c} (by the study's patient)"
            for c in instance_disagreements(patient, header, PATIENT_FIELDS)
            if f"{c} (by the series)" not in conflicts
        ]
    return conflicts


def _study_patient(study: Study) -> InstanceHeader:
    """The patient of a study as first received, as a header (for the identity comparison)."""
    return InstanceHeader(
        sop_instance_uid=None,
        sop_class_uid=None,
        study_instance_uid=study.study_instance_uid,
        series_instance_uid=None,
        transfer_syntax_uid=None,
        patient_id=study.patient_id,
        issuer_of_patient_id=study.issuer_of_patient_id,
        patient_name=study.patient_name,
        patient_birth_date=study.patient_birth_date,
        patient_sex=study.patient_sex,
    )


def study_patient_conflicts(session: Session, headers: Sequence[InstanceHeader]) -> list[str]:
    """How a series' patient differs from the patient its study was first received for, in words.

    A Study Instance UID belongs to one patient (PS3.3 A.1.2): a series that puts another
    patient under it is not analysed, whichever of the two arrived second.
    """
    reasons: list[str] = []
    for study_uid in sorted({h.study_instance_uid for h in headers if h.study_instance_uid}):
        study = session.get(Study, study_uid)
        if study is None:
            continue
        patient = identity_of(_study_patient(study))
        differing = sorted(
            {
                c
                for h in headers
                if h.study_instance_uid == study_uid
                for c in instance_disagreements(patient, h, PATIENT_FIELDS)
            }
        )
        if differing:
            reasons.append(f"study {study_uid} was received for another patient: " + "; ".join(differing))
    return reasons


def index_instance(
    session: Session,
    *,
    header: InstanceHeader,
    path: str,
    size: int,
    calling_aet: str | None,
) -> Indexed:
    """Record a stored instance; reopen its series when it had already been finalised.

    The instance's identity is compared with what its series and study already hold first, so
    that a disagreement is recorded on the series (``identity_conflicts``) as it arrives.  A
    reopened series (``Indexed.reopened``) makes a running analysis of it stale.
    """
    now = utcnow()
    conflicts = held_identity_conflicts(session, header)
    insert_ignore(
        session,
        Study,
        {
            "study_instance_uid": header.study_instance_uid,
            "patient_id": header.patient_id,
            "issuer_of_patient_id": header.issuer_of_patient_id,
            "patient_name": header.patient_name,
            "patient_birth_date": header.patient_birth_date,
            "patient_sex": header.patient_sex,
            "accession_number": header.accession_number,
            "study_date": header.study_date,
            "study_time": header.study_time,
            "study_description": header.study_description,
            "created_at": now,
        },
    )
    insert_ignore(
        session,
        Series,
        {
            "series_instance_uid": header.series_instance_uid,
            "study_instance_uid": header.study_instance_uid,
            "modality": header.modality,
            "sop_class_uid": header.sop_class_uid,
            "series_number": header.series_number,
            "series_description": header.series_description,
            "state": SeriesState.RECEIVING,
            "reasons": [],
            "identity_conflicts": [],
            "instance_count": 0,
            "calling_aet": calling_aet,
            "reopen_count": 0,
            "first_received_at": now,
            "last_received_at": now,
        },
    )
    new_instance = insert_ignore(
        session,
        Instance,
        {
            "sop_instance_uid": header.sop_instance_uid,
            "series_instance_uid": header.series_instance_uid,
            "sop_class_uid": header.sop_class_uid,
            "transfer_syntax_uid": header.transfer_syntax_uid,
            "path": path,
            "size": size,
            "header": header.to_json(),
            "received_at": now,
        },
    )
    if not new_instance:
        existing = instance_at(session, str(header.sop_instance_uid))
        if existing is not None and existing[1] != path:
            return Indexed(new=False, stored_elsewhere=existing[0])
    uid = header.series_instance_uid
    values: dict[str, Any] = {"last_received_at": now}
    if new_instance:
        values["instance_count"] = Series.instance_count + 1
    session.execute(update(Series).where(col(Series.series_instance_uid) == uid).values(**values))
    if not new_instance:
        return Indexed(new=False)
    if conflicts:
        series = session.get(Series, uid)
        assert series is not None
        known = list(series.identity_conflicts)
        added = [c for c in conflicts if c not in known]
        if added:
            session.execute(
                update(Series)
                .where(col(Series.series_instance_uid) == uid)
                .values(identity_conflicts=(known + added)[-_MAX_IDENTITY_CONFLICTS:])
            )
    reopened = changed_rows(
        session,
        update(Series)
        .where(col(Series.series_instance_uid) == uid, col(Series.state).not_in(_OPEN_STATES))
        .values(
            state=SeriesState.RECEIVING,
            reopen_count=Series.reopen_count + 1,
            reasons=[],
            completed_at=None,
        ),
    )
    if reopened:
        # New content is judged afresh: a running analysis of the old one is stale, and an admin's
        # eligibility override, granted for the old content, no longer holds.
        session.execute(
            update(Job)
            .where(col(Job.series_instance_uid) == uid)
            .values(revision=Job.revision + 1, eligibility_override=None)
        )
    return Indexed(new=True, reopened=bool(reopened), conflicts=tuple(conflicts))


def series_headers(session: Session, series_uid: str) -> list[InstanceHeader]:
    """Headers of every stored instance of a series."""
    rows = session.exec(select(Instance.header).where(Instance.series_instance_uid == series_uid)).all()
    return [InstanceHeader.from_json(row) for row in rows]


def series_instance_paths(session: Session, series_uid: str) -> list[str]:
    """Spool paths of every stored instance of a series."""
    return list(session.exec(select(Instance.path).where(Instance.series_instance_uid == series_uid)).all())


def claim_series_for_finalizing(session: Session, series_uid: str, trigger: str) -> bool:
    """Move a receiving series to ``finalizing``; only one caller can win."""
    changed = changed_rows(
        session,
        update(Series)
        .where(col(Series.series_instance_uid) == series_uid, col(Series.state) == SeriesState.RECEIVING)
        .values(state=SeriesState.FINALIZING, completion_trigger=trigger, completed_at=utcnow()),
    )
    return bool(changed)


def set_series_state(session: Session, series_uid: str, state: str, reasons: Sequence[str] = ()) -> None:
    """Set a series' state and its reasons (every reason, in words)."""
    session.execute(
        update(Series).where(col(Series.series_instance_uid) == series_uid).values(state=state, reasons=list(reasons))
    )


def _move_series_of_job(session: Session, series_uid: str, state: str, reasons: Sequence[str] = ()) -> None:
    """Set the series' state for a step of its job, unless the series is ``rejected``.

    The only job a rejected series has is the one that sends its not-analysed notice
    (:func:`server.routing.intake.route_series`).  Queuing, running, holding, taking over,
    failing or cancelling that job must not show the series as queued or being analysed, nor
    drop the reasons it was turned away for: a reader or admin would see "Being analysed" for a
    series that never will be.  Only routing (a re-evaluation, a reopened series) and the
    job's own outcome (:func:`finish_job`, an identity conflict in :func:`fail_job`) move it.
    """
    session.execute(
        update(Series)
        .where(col(Series.series_instance_uid) == series_uid, col(Series.state) != SeriesState.REJECTED)
        .values(state=state, reasons=list(reasons))
    )


def claim_series_for_reevaluation(session: Session, series_uid: str, states: Sequence[str], reopen_count: int) -> bool:
    """Move a series in one of ``states`` to ``finalizing`` for an admin's re-evaluation; only one caller wins.

    ``reopen_count`` is the count the caller judged the series at: a late instance reopens the
    series and raises it, so a decision about other content never applies.  A second admin
    acting at the same moment loses too, so the series is routed once.
    """
    changed = changed_rows(
        session,
        update(Series)
        .where(
            col(Series.series_instance_uid) == series_uid,
            col(Series.state).in_(list(states)),
            col(Series.reopen_count) == reopen_count,
        )
        .values(state=SeriesState.FINALIZING),
    )
    return bool(changed)


def queue_job(
    session: Session,
    *,
    series_uid: str,
    pipeline_version: str,
    eligibility_override: dict[str, Any] | None = None,
) -> Job:
    """Get or create the job of (series, pipeline version) and mark it queued at a new revision.

    ``eligibility_override`` replaces the job's override (None clears it): routing judges the
    series afresh each time it queues it, and only an admin's re-evaluation grants one.
    """
    key = f"{series_uid}:{pipeline_version}"
    insert_ignore(
        session,
        Job,
        {
            "idempotency_key": key,
            "series_instance_uid": series_uid,
            "pipeline_version": pipeline_version,
            "state": JobState.QUEUED,
            "revision": 0,
            "attempts": 0,
            "timings": {},
        },
    )
    session.execute(
        update(Job)
        .where(col(Job.idempotency_key) == key)
        .values(
            state=JobState.QUEUED,
            revision=Job.revision + 1,
            error=None,
            held_for=None,
            lease_until=None,
            queued_at=utcnow(),
            started_at=None,
            finished_at=None,
            eligibility_override=eligibility_override,
        )
    )
    _move_series_of_job(session, series_uid, SeriesState.QUEUED)
    job = session.exec(select(Job).where(Job.idempotency_key == key)).one()
    session.refresh(job)
    assert job.id is not None
    detail: dict[str, Any] = {"revision": job.revision}
    if eligibility_override is not None:
        detail["eligibility_override"] = eligibility_override
    add_job_event(session, job.id, "queued", detail)
    return job


@dataclass(frozen=True)
class Claim:
    """The outcome of :func:`start_job`: run it, skip the message, or look again later.

    ``retry_in_s`` is set when another attempt holds a live lease on the job: it may have died
    just now (its lease has not run out yet) or still be running; either way the message is
    looked at again when the lease would have ended.
    """

    started: bool
    retry_in_s: float | None = None


def start_job(session: Session, job_id: int, revision: int, lease: timedelta) -> Claim:
    """Claim a job for one attempt.

    A queued job of the current revision is claimed.  A *running* one of the current revision is
    claimed too when its lease has expired: its worker died (killed, out of memory, host lost)
    and the broker redelivered the message; the takeover is recorded in the job's events.  A
    superseded revision or a finished job is skipped.
    """
    now = utcnow()
    claimable = or_(
        col(Job.state) == JobState.QUEUED,
        and_(col(Job.state) == JobState.RUNNING, or_(col(Job.lease_until).is_(None), col(Job.lease_until) < now)),
    )
    before = session.get(Job, job_id)
    took_over = before is not None and before.state == JobState.RUNNING
    changed = changed_rows(
        session,
        update(Job)
        .where(col(Job.id) == job_id, col(Job.revision) == revision, claimable)
        .values(state=JobState.RUNNING, started_at=now, attempts=Job.attempts + 1, lease_until=now + lease),
    )
    job = session.get(Job, job_id)
    if changed and job is not None:
        session.refresh(job)
        _move_series_of_job(session, job.series_instance_uid, SeriesState.ANALYSING)
        detail: dict[str, Any] = {"revision": revision, "attempt": job.attempts}
        if took_over:
            detail["taken_over"] = "the previous attempt's lease expired (its worker was lost)"
            add_job_event(session, job_id, "taken_over", {"revision": revision, "why": detail["taken_over"]})
        add_job_event(session, job_id, "started", detail)
        return Claim(started=True)
    if job is not None and job.revision == revision and job.state == JobState.RUNNING and job.lease_until:
        return Claim(started=False, retry_in_s=max(1.0, (_aware(job.lease_until) - now).total_seconds()))
    return Claim(started=False)


def _lease_expired(now: datetime) -> Any:
    """A running attempt whose worker stopped renewing its lease (killed, out of memory, host lost)."""
    return and_(col(Job.state) == JobState.RUNNING, col(Job.lease_until).is_not(None), col(Job.lease_until) < now)


def take_over_lost_jobs(session: Session, now: datetime) -> list[tuple[int, int]]:
    """Queue again, at a new revision, every running job whose lease has expired; (job, revision) of each.

    The server does this itself (issue 14: no admin needed): a worker that died with its message
    reserved (the embedded broker keeps it invisible for ever, Redis for its visibility timeout)
    would otherwise strand the job.  The new revision supersedes the lost attempt, so if it was
    only slow and comes back, its results are discarded (:func:`finish_job`) and one set of
    reports is delivered.
    """
    candidates = session.exec(select(Job.id, Job.revision, Job.lease_until).where(_lease_expired(now))).all()
    taken: list[tuple[int, int]] = []
    for job_id, revision, lease_until in candidates:
        assert job_id is not None and lease_until is not None
        changed = changed_rows(
            session,
            update(Job)
            .where(col(Job.id) == job_id, col(Job.revision) == revision, _lease_expired(now))
            .values(
                state=JobState.QUEUED,
                revision=Job.revision + 1,
                lease_until=None,
                queued_at=now,
                error=f"taken over: the attempt's lease ran out at {_aware(lease_until).isoformat()}",
            ),
        )
        if not changed:
            continue
        job = session.get(Job, job_id)
        assert job is not None
        session.refresh(job)
        _move_series_of_job(session, job.series_instance_uid, SeriesState.QUEUED)
        add_job_event(
            session,
            job_id,
            "taken_over",
            {"revision": job.revision, "why": "the worker running it was lost (its lease expired)"},
        )
        taken.append((job_id, job.revision))
    return taken


@dataclass(frozen=True)
class StuckJob:
    """A job that is not moving, and why, for operators (REST and metrics read the same list)."""

    job_id: int
    series_instance_uid: str
    state: str
    reason: str
    why: str
    since: datetime | None


def stuck_jobs(session: Session, now: datetime, waiting_after: timedelta) -> list[StuckJob]:
    """Jobs that need the server's (or an operator's) attention, oldest first.

    ``lease_expired``: running, but its worker stopped renewing the lease (the server takes it over
    at its next sweep); ``held``: queued but held back (``Job.held_for``, e.g. disk space);
    ``waiting``: queued and sent longer than ``waiting_after`` ago without any worker taking it.
    """
    last_sent = func.coalesce(col(Job.sent_at), col(Job.queued_at))
    rows = session.exec(
        select(Job).where(
            or_(
                _lease_expired(now),
                and_(col(Job.state) == JobState.QUEUED, col(Job.held_for).is_not(None)),
                and_(col(Job.state) == JobState.QUEUED, last_sent < now - waiting_after),
            )
        )
    ).all()
    stuck: list[StuckJob] = []
    for job in rows:
        assert job.id is not None
        if job.state == JobState.RUNNING:
            reason, why, since = "lease_expired", "its worker stopped renewing the lease", job.lease_until
        elif job.held_for:
            reason, why, since = "held", job.held_for, job.queued_at
        else:
            reason, why, since = "waiting", "no worker has taken it", job.sent_at or job.queued_at
        stuck.append(StuckJob(job.id, job.series_instance_uid, job.state, reason, why, since))
    return sorted(stuck, key=lambda j: j.since or now)


def mark_sent(session: Session, job_id: int) -> None:
    """Record that a message for the job was just handed to the broker."""
    session.execute(update(Job).where(col(Job.id) == job_id).values(sent_at=utcnow()))


def unsent_queued_jobs(session: Session, older_than: datetime) -> list[tuple[int, int]]:
    """(job, revision) of queued jobs whose last message is older than ``older_than``, oldest first."""
    last = func.coalesce(col(Job.sent_at), col(Job.queued_at))
    rows = session.exec(
        select(Job.id, Job.revision)
        .where(col(Job.state) == JobState.QUEUED, col(Job.held_for).is_(None), last < older_than)
        .order_by(last)
    ).all()
    return [(int(job_id), int(revision)) for job_id, revision in rows if job_id is not None]


def renew_lease(session: Session, job_id: int, revision: int, lease: timedelta) -> bool:
    """Extend the lease of a running attempt; False when the job is no longer this attempt's."""
    return bool(
        changed_rows(
            session,
            update(Job)
            .where(col(Job.id) == job_id, col(Job.revision) == revision, col(Job.state) == JobState.RUNNING)
            .values(lease_until=utcnow() + lease),
        )
    )


def _aware(moment: datetime) -> datetime:
    """SQLite returns naive datetimes for timezone-aware columns; they are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def job_is_current(session: Session, job_id: int, revision: int) -> bool:
    """True while no later arrival or re-queue has superseded this run of the job."""
    job = session.get(Job, job_id)
    return job is not None and job.revision == revision and job.state == JobState.RUNNING


def finish_job(
    session: Session,
    job_id: int,
    revision: int,
    *,
    result_dir: str,
    timings: dict[str, float],
    series_state: str = SeriesState.DONE,
    reasons: Sequence[str] = (),
) -> bool:
    """Mark a running job done (if still current) and its series ``series_state``."""
    changed = changed_rows(
        session,
        update(Job)
        .where(col(Job.id) == job_id, col(Job.revision) == revision, col(Job.state) == JobState.RUNNING)
        .values(state=JobState.DONE, finished_at=utcnow(), result_dir=result_dir, timings=timings, error=None),
    )
    if changed:
        job = session.get(Job, job_id)
        assert job is not None
        set_series_state(session, job.series_instance_uid, series_state, reasons)
        add_job_event(session, job_id, "finished", {"series_state": series_state})
    return bool(changed)


def fail_job(
    session: Session,
    job_id: int,
    revision: int,
    error: str,
    *,
    series_state: str = SeriesState.FAILED,
    reasons: Sequence[str] = (),
) -> bool:
    """Mark a job failed with its error (after the last retry) and its series ``series_state``.

    The series' reasons are ``reasons``, or the error itself when none are given.
    """
    changed = changed_rows(
        session,
        update(Job)
        .where(col(Job.id) == job_id, col(Job.revision) == revision)
        .values(state=JobState.FAILED, finished_at=utcnow(), error=error, lease_until=None),
    )
    if changed:
        job = session.get(Job, job_id)
        assert job is not None
        move = set_series_state if series_state == SeriesState.REJECTED else _move_series_of_job
        move(session, job.series_instance_uid, series_state, list(reasons) or [error])
        add_job_event(session, job_id, "failed", {"error": error})
    return bool(changed)


def requeue_after_transient_error(session: Session, job_id: int, revision: int, error: str) -> None:
    """Put a running job back to queued (same revision) before a Celery retry."""
    session.execute(
        update(Job)
        .where(col(Job.id) == job_id, col(Job.revision) == revision, col(Job.state) == JobState.RUNNING)
        .values(state=JobState.QUEUED, error=f"retrying after: {error}")
    )


def hold_job(session: Session, job_id: int, revision: int, why: str) -> bool:
    """Put a running job back to queued and hold it there for ``why`` (e.g. the disk is full).

    Held jobs are not sent again by the lost-message check; :func:`release_held_jobs` lets them
    go once their cause is over.  Nothing is failed: no admin is needed to get the job analysed.
    """
    changed = changed_rows(
        session,
        update(Job)
        .where(col(Job.id) == job_id, col(Job.revision) == revision, col(Job.state) == JobState.RUNNING)
        .values(state=JobState.QUEUED, held_for=why, lease_until=None, error=f"held: {why}"),
    )
    if changed:
        job = session.get(Job, job_id)
        assert job is not None
        _move_series_of_job(session, job.series_instance_uid, SeriesState.QUEUED, [f"waiting: {why}"])
        add_job_event(session, job_id, "held", {"why": why})
    return bool(changed)


def release_held_jobs(session: Session) -> list[tuple[int, int]]:
    """Release every held job to be sent again; (job, revision) of each, oldest first."""
    rows = session.exec(
        select(Job.id, Job.revision)
        .where(col(Job.state) == JobState.QUEUED, col(Job.held_for).is_not(None))
        .order_by(col(Job.queued_at))
    ).all()
    released: list[tuple[int, int]] = []
    for job_id, revision in rows:
        assert job_id is not None
        changed = changed_rows(
            session,
            update(Job)
            .where(col(Job.id) == job_id, col(Job.revision) == revision, col(Job.held_for).is_not(None))
            .values(held_for=None, error=None),
        )
        if changed:
            add_job_event(session, job_id, "released", {"revision": revision})
            released.append((job_id, revision))
    return released


def upsert_delivery(
    session: Session, *, job_id: int, destination: str, kind: str, path: str, sop_instance_uid: str
) -> int:
    """Put one object for one destination in the outbox (again, after a re-run); its id."""
    inserted = insert_ignore(
        session,
        Delivery,
        {
            "job_id": job_id,
            "destination": destination,
            "kind": kind,
            "path": path,
            "sop_instance_uid": sop_instance_uid,
            "state": DeliveryState.PENDING,
            "attempts": 0,
            "next_attempt_at": utcnow(),
        },
    )
    row = session.exec(
        select(Delivery).where(Delivery.sop_instance_uid == sop_instance_uid, Delivery.destination == destination)
    ).one()
    if not inserted:
        row.state, row.path, row.job_id, row.kind = DeliveryState.PENDING, path, job_id, kind
        row.next_attempt_at, row.last_error, row.sent_at = utcnow(), None, None
        session.add(row)
    session.flush()
    assert row.id is not None
    return row.id


def _delivery_event(session: Session, delivery_id: int, kind: str, error: str | None = None) -> None:
    row = session.get(Delivery, delivery_id)
    if row is not None:
        detail: dict[str, Any] = {"destination": row.destination, "object": row.kind, "attempt": row.attempts}
        if error:
            detail["error"] = error
        add_job_event(session, row.job_id, kind, detail, name=row.destination)


def delivery_sent(session: Session, delivery_id: int) -> None:
    """The destination accepted the object."""
    session.execute(
        update(Delivery)
        .where(col(Delivery.id) == delivery_id)
        .values(state=DeliveryState.SENT, sent_at=utcnow(), last_error=None)
    )
    _delivery_event(session, delivery_id, "delivered")


def delivery_failed(session: Session, delivery_id: int, error: str, retry_at: datetime) -> None:
    """One attempt failed: back to pending, to be tried again at ``retry_at``."""
    session.execute(
        update(Delivery)
        .where(col(Delivery.id) == delivery_id)
        .values(state=DeliveryState.PENDING, last_error=error, next_attempt_at=retry_at)
    )
    _delivery_event(session, delivery_id, "delivery_failed", error)


def delivery_refused(session: Session, delivery_id: int, error: str) -> None:
    """The destination refused the object for good: recorded, not retried."""
    session.execute(
        update(Delivery)
        .where(col(Delivery.id) == delivery_id)
        .values(state=DeliveryState.REFUSED, last_error=error, next_attempt_at=None)
    )
    _delivery_event(session, delivery_id, "delivery_refused", error)


def add_job_event(
    session: Session,
    job_id: int,
    kind: str,
    detail: dict[str, Any] | None = None,
    *,
    at: datetime | None = None,
    name: str | None = None,
    seconds: float | None = None,
) -> None:
    """Append one step to a job's timeline."""
    session.add(JobEvent(job_id=job_id, at=at or utcnow(), kind=kind, name=name, seconds=seconds, detail=detail or {}))


def requeue_job(session: Session, job_id: int) -> Job | None:
    """An admin's re-queue: a new revision of the job, queued again (None if no such job).

    The series' content is unchanged (new content reopens it and routing queues it afresh), so
    an eligibility override the job carries stays in force.
    """
    job = session.get(Job, job_id)
    if job is None:
        return None
    return queue_job(
        session,
        series_uid=job.series_instance_uid,
        pipeline_version=job.pipeline_version,
        eligibility_override=job.eligibility_override,
    )


def cancel_job(session: Session, job_id: int) -> bool:
    """Cancel a queued or running job: its revision moves on, so a running task discards its work."""
    changed = changed_rows(
        session,
        update(Job)
        .where(col(Job.id) == job_id, col(Job.state).in_((JobState.QUEUED, JobState.RUNNING)))
        .values(state=JobState.CANCELLED, revision=Job.revision + 1, finished_at=utcnow()),
    )
    if changed:
        job = session.get(Job, job_id)
        assert job is not None
        _move_series_of_job(session, job.series_instance_uid, SeriesState.CANCELLED, ["cancelled by an admin"])
        add_job_event(session, job_id, "cancelled")
    return bool(changed)


def resend_deliveries(session: Session, job_id: int, destination: str | None) -> list[int]:
    """Put a job's delivered or refused objects back in the outbox (for one destination or all)."""
    stmt = select(Delivery).where(Delivery.job_id == job_id)
    if destination is not None:
        stmt = stmt.where(Delivery.destination == destination)
    rows = session.exec(stmt).all()
    for row in rows:
        row.state, row.next_attempt_at, row.last_error, row.sent_at = DeliveryState.PENDING, utcnow(), None, None
        session.add(row)
    add_job_event(session, job_id, "resend", {"destination": destination or "all", "objects": len(rows)})
    session.flush()
    return [r.id for r in rows if r.id is not None]


def idle_series(session: Session, older_than: datetime) -> list[str]:
    """Receiving series whose last instance arrived before ``older_than``."""
    rows = session.exec(
        select(Series.series_instance_uid).where(
            Series.state == SeriesState.RECEIVING, col(Series.last_received_at) < older_than
        )
    ).all()
    return list(rows)


#: Outbox tables: rows with ``id``, ``state`` (:class:`DeliveryState`), ``attempts``, ``next_attempt_at``
#: and ``claimed_at``, sent by a task that claims one row per attempt (:mod:`server.tasks.outbox`).
OutboxTable = type[Delivery] | type[Notification]


def due_outbox_rows(
    session: Session, table: OutboxTable, now: datetime, stale_after: timedelta, limit: int = 100
) -> list[int]:
    """Rows of ``table`` to (re)try now: pending and due, or claimed long ago by a sender that died."""
    rows = session.exec(
        select(table.id)
        .where(
            ((col(table.state) == DeliveryState.PENDING) & (col(table.next_attempt_at) <= now))
            | ((col(table.state) == DeliveryState.SENDING) & (col(table.claimed_at) < now - stale_after))
        )
        .order_by(col(table.next_attempt_at))
        .limit(limit)
    ).all()
    return [r for r in rows if r is not None]


def lease_outbox_row(session: Session, table: OutboxTable, row_id: int, until: datetime) -> bool:
    """Push a pending row's next attempt to ``until`` while its message is on the queue; False if another pump won."""
    return bool(
        changed_rows(
            session,
            update(table)
            .where(col(table.id) == row_id, col(table.state) == DeliveryState.PENDING)
            .values(next_attempt_at=until),
        )
    )


def claim_outbox_row(session: Session, table: OutboxTable, row_id: int, stale_after: timedelta) -> bool:
    """Claim a pending (or abandoned ``sending``) row for one attempt; only one sender wins."""
    now = utcnow()
    return bool(
        changed_rows(
            session,
            update(table)
            .where(
                col(table.id) == row_id,
                (col(table.state) == DeliveryState.PENDING)
                | ((col(table.state) == DeliveryState.SENDING) & (col(table.claimed_at) < now - stale_after)),
            )
            .values(state=DeliveryState.SENDING, claimed_at=now, attempts=table.attempts + 1),
        )
    )


def add_notification(
    session: Session,
    *,
    job_id: int | None,
    series_uid: str,
    event: str,
    channel: str,
    target: str,
    facts: dict[str, Any],
) -> int:
    """Put one result notification for one receiver in the outbox, due now; its id.

    Called in the transaction that changes the series' state, so the notification exists exactly
    when the change does (a rollback takes both back).
    """
    now = utcnow()
    row = Notification(
        job_id=job_id,
        series_instance_uid=series_uid,
        event=event,
        channel=channel,
        target=target,
        facts=facts,
        state=DeliveryState.PENDING,
        created_at=now,
        next_attempt_at=now,
    )
    session.add(row)
    session.flush()
    assert row.id is not None
    return row.id


def _notification_event(session: Session, notification_id: int, kind: str, detail: dict[str, Any]) -> None:
    """The outcome in the job's timeline (a series rejected without a job has none)."""
    row = session.get(Notification, notification_id)
    if row is not None and row.job_id is not None:
        full = {"notification": notification_id, "event": row.event, "attempt": row.attempts, **detail}
        add_job_event(session, row.job_id, kind, full, name=row.channel)


def notification_sent(session: Session, notification_id: int, status: int) -> None:
    """The receiver accepted the notification (HTTP ``status``)."""
    session.execute(
        update(Notification)
        .where(col(Notification.id) == notification_id)
        .values(state=DeliveryState.SENT, sent_at=utcnow(), last_error=None, response_status=status)
    )
    _notification_event(session, notification_id, "notification_sent", {"status": status})


def notification_failed(
    session: Session, notification_id: int, error: str, retry_at: datetime, status: int | None
) -> None:
    """One attempt failed (no answer, a timeout, 5xx ...): back to pending, tried again at ``retry_at``."""
    session.execute(
        update(Notification)
        .where(col(Notification.id) == notification_id)
        .values(
            state=DeliveryState.PENDING,
            last_error=error,
            next_attempt_at=retry_at,
            response_status=status,
            failures=Notification.failures + 1,
        )
    )
    _notification_event(session, notification_id, "notification_failed", {"error": error})


def notification_refused(session: Session, notification_id: int, error: str, status: int | None) -> None:
    """The receiver refused the notification for good (a permanent 4xx), or it could not be built: not retried."""
    session.execute(
        update(Notification)
        .where(col(Notification.id) == notification_id)
        .values(state=DeliveryState.REFUSED, last_error=error, next_attempt_at=None, response_status=status)
    )
    _notification_event(session, notification_id, "notification_refused", {"error": error})


def list_notifications(
    session: Session,
    *,
    job_id: int | None = None,
    series_uid: str | None = None,
    state: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[int, list[Notification]]:
    """Result notifications, newest first, of a job, a series and/or in a state: (total, this page)."""
    stmt = select(Notification)
    if job_id is not None:
        stmt = stmt.where(Notification.job_id == job_id)
    if series_uid is not None:
        stmt = stmt.where(Notification.series_instance_uid == series_uid)
    if state is not None:
        stmt = stmt.where(Notification.state == state)
    total = session.exec(select(func.count()).select_from(stmt.subquery())).one()
    rows = session.exec(stmt.order_by(col(Notification.id).desc()).offset(offset).limit(limit)).all()
    return int(total), list(rows)
