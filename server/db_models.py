"""Database tables (SQLModel).  Schema changes go only through Alembic (``server/alembic``).

States
------
Series: ``receiving`` → ``finalizing`` → ``queued`` | ``rejected`` | ``ignored``;
``queued`` → ``analysing`` → ``done`` | ``not_analysable`` (routed, but the pixels could not be
analysed; reports say why) | ``failed`` (an error, on the job).  A ``rejected`` chest CT's notice
job (queued, running, held, failed or cancelled) never moves its series out of ``rejected``.  An
instance that arrives after the series left ``receiving`` reopens it (``reopen_count`` + 1) and
invalidates the running job revision, so the series is analysed again under the same job instead
of starting a second one.

Job: ``queued`` → ``running`` → ``done`` | ``failed``; ``revision`` increases at every
(re)queue, and a task only acts when the revision it was given is still current.

An admin may re-evaluate a ``rejected`` or ``ignored`` series under the rules in force now
(:mod:`server.services.reevaluation`): eligible now, it is queued as a fresh series would be;
with an override (``Job.eligibility_override``) it is queued although technical criteria
fail, never when its instances disagree on whose images they are or when it is no CT image
series.

Delivery (the outbox): ``pending`` → ``sending`` → ``sent``; a failed attempt returns to
``pending`` with ``next_attempt_at`` pushed back, until the PACS accepts.  A destination that
refuses the object for good (it does not store that SOP class, or answers a failure status that
no retry can change) makes it ``refused``, with the reason; the other objects still go.

Notification (the same outbox states): one result notification (a signed webhook or a FHIR
transaction) to one receiver, written in the transaction that moves a series to ``done``,
``not_analysable``, ``failed`` or ``rejected`` (:mod:`server.notifications`); ``refused`` after
a permanent refusal (an HTTP 4xx other than 408, 425 and 429).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import JSON, Column, DateTime, TypeDecorator, UniqueConstraint
from sqlmodel import Field, SQLModel

__all__ = [
    "AuditEvent",
    "JobEvent",
    "WorkerHeartbeat",
    "ApiKey",
    "Delivery",
    "DeliveryState",
    "Instance",
    "Job",
    "JobState",
    "Notification",
    "NotificationChannel",
    "NotificationEvent",
    "Series",
    "SeriesState",
    "Study",
    "utcnow",
]


def utcnow() -> datetime:
    """Timezone-aware now; every timestamp in the database is UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    PostgreSQL keeps the zone; SQLite stores text without it and hands back naive values,
    so values are normalised to UTC on the way in and marked UTC on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use server.db_models.utcnow()")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)


def _ts(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable))


class SeriesState:
    """Series states (plain strings in the database, listed once here)."""

    RECEIVING = "receiving"
    FINALIZING = "finalizing"
    QUEUED = "queued"
    ANALYSING = "analysing"
    DONE = "done"
    NOT_ANALYSABLE = "not_analysable"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    IGNORED = "ignored"


class JobState:
    """Job states."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class DeliveryState:
    """Outbox entry states."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    REFUSED = "refused"


class NotificationEvent:
    """What a result notification reports: the series' state that it was written with."""

    DONE: Final = "done"
    NOT_ANALYSABLE: Final = "not_analysable"
    FAILED: Final = "failed"
    REJECTED: Final = "rejected"


class NotificationChannel:
    """How a result notification is sent."""

    WEBHOOK = "webhook"
    FHIR = "fhir"


class Study(SQLModel, table=True):
    """A DICOM study as first seen; patient attributes are kept for the API, never logged."""

    study_instance_uid: str = Field(primary_key=True, max_length=64)
    patient_id: str | None = Field(default=None, index=True)
    issuer_of_patient_id: str | None = None
    patient_name: str | None = None
    patient_birth_date: str | None = None
    patient_sex: str | None = None
    accession_number: str | None = Field(default=None, index=True)
    study_date: str | None = Field(default=None, index=True)
    study_time: str | None = None
    study_description: str | None = None
    created_at: datetime | None = _ts()


class Series(SQLModel, table=True):
    """One received series and where it stands in the data flow."""

    series_instance_uid: str = Field(primary_key=True, max_length=64)
    study_instance_uid: str = Field(foreign_key="study.study_instance_uid", index=True, max_length=64)
    modality: str | None = None
    sop_class_uid: str | None = None
    series_number: int | None = None
    series_description: str | None = None
    state: str = Field(default=SeriesState.RECEIVING, index=True)
    reasons: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    #: Instances that disagreed on whose images these are, as they arrived (never cleared: the
    #: series is rejected when it is finalised, and this says why from the first such instance).
    identity_conflicts: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    instance_count: int = 0
    calling_aet: str | None = None
    reopen_count: int = 0
    completion_trigger: str | None = None
    first_received_at: datetime | None = _ts()
    last_received_at: datetime | None = _ts()
    completed_at: datetime | None = _ts()
    purged_at: datetime | None = _ts()


class Instance(SQLModel, table=True):
    """One stored SOP instance; ``header`` is the JSON summary routing decisions use."""

    sop_instance_uid: str = Field(primary_key=True, max_length=64)
    series_instance_uid: str = Field(foreign_key="series.series_instance_uid", index=True, max_length=64)
    sop_class_uid: str
    transfer_syntax_uid: str | None = None
    path: str
    size: int
    header: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    received_at: datetime | None = _ts()


class Job(SQLModel, table=True):
    """The analysis of one series under one pipeline version (the idempotency key)."""

    __table_args__ = (UniqueConstraint("idempotency_key", name="uq_job_idempotency_key"),)

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(max_length=200)
    series_instance_uid: str = Field(foreign_key="series.series_instance_uid", index=True, max_length=64)
    pipeline_version: str
    state: str = Field(default=JobState.QUEUED, index=True)
    revision: int = 0
    attempts: int = 0
    error: str | None = None
    result_dir: str | None = None
    queued_at: datetime | None = _ts()
    started_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()
    #: Until when the running attempt holds the job; renewed while it runs, so an expired lease
    #: means its worker died and a redelivered message may take the job over.
    lease_until: datetime | None = _ts()
    #: When a message for this job was last handed to the broker (a queued job whose message the
    #: broker lost, e.g. in a restart without persistence, is sent again after a while).
    sent_at: datetime | None = _ts()
    timings: dict[str, float] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    #: Why a queued job is held back instead of sent (e.g. the results disk is below its reserve);
    #: the routing loop sends it when that is over.
    held_for: str | None = None
    #: An admin's decision to analyse this series although it fails the eligibility rules:
    #: ``reason``, ``by`` (the actor), ``at`` (ISO 8601 UTC) and ``reasons`` (what was overridden).
    #: None for a series the rules let through.  Routing clears it whenever it queues the job
    #: again (new content is judged afresh); an admin's re-queue keeps it.
    eligibility_override: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class Delivery(SQLModel, table=True):
    """One report object to one destination: the outbox row that retries until accepted."""

    __table_args__ = (UniqueConstraint("sop_instance_uid", "destination", name="uq_delivery_object_dest"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    destination: str
    kind: str
    path: str
    sop_instance_uid: str = Field(max_length=64)
    state: str = Field(default=DeliveryState.PENDING, index=True)
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = _ts()
    claimed_at: datetime | None = _ts()
    sent_at: datetime | None = _ts()


class Notification(SQLModel, table=True):
    """One result notification to one receiver: the outbox row that retries until it is accepted.

    ``facts`` is what was known when the series changed state (:class:`server.notifications.facts.EventFacts`),
    kept so that a retry, or a receiver that comes back a day later, gets the event as it happened,
    not the series as it is by then.  ``job_id`` is None for a series rejected without a job.
    ``failures`` counts attempts that failed and are retried (for ``/metrics``).
    """

    id: int | None = Field(default=None, primary_key=True)
    job_id: int | None = Field(default=None, foreign_key="job.id", index=True)
    series_instance_uid: str = Field(foreign_key="series.series_instance_uid", index=True, max_length=64)
    event: str
    channel: str
    target: str
    facts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    state: str = Field(default=DeliveryState.PENDING, index=True)
    attempts: int = 0
    failures: int = 0
    last_error: str | None = None
    response_status: int | None = None
    created_at: datetime | None = _ts()
    next_attempt_at: datetime | None = _ts()
    claimed_at: datetime | None = _ts()
    sent_at: datetime | None = _ts()


class ApiKey(SQLModel, table=True):
    """An API key: only a SHA-256 of the (high-entropy, random) key is stored."""

    id: int | None = Field(default=None, primary_key=True)
    key_prefix: str = Field(index=True, max_length=16)
    key_hash: str = Field(unique=True, max_length=64)
    role: str
    label: str | None = None
    created_at: datetime | None = _ts()
    revoked_at: datetime | None = _ts()


class AuditEvent(SQLModel, table=True):
    """One audited access: an API request or a DICOM association (IHE ATNA's who, when, what, outcome).

    Append-only: the database refuses UPDATE and DELETE on this table (triggers created by the
    migration), so not even the application can rewrite history.
    """

    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime | None = _ts(nullable=False)
    channel: str = Field(index=True)
    actor: str = Field(index=True)
    role: str | None = None
    source: str | None = None
    action: str
    target: str | None = None
    outcome: str = Field(index=True)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class JobEvent(SQLModel, table=True):
    """One step of a job's timeline: queued, started, each model's start and end, deliveries.

    ``name`` and ``seconds`` are columns (not only JSON) so that metrics can aggregate stage
    durations per model in SQL on SQLite and PostgreSQL alike.
    """

    __tablename__ = "job_event"

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    at: datetime | None = _ts(nullable=False)
    kind: str = Field(index=True)
    name: str | None = None
    seconds: float | None = None
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class WorkerHeartbeat(SQLModel, table=True):
    """The last sign of life of a worker process, for the queue overview."""

    __tablename__ = "worker_heartbeat"

    hostname: str = Field(primary_key=True, max_length=255)
    queues: str
    pid: int
    started_at: datetime | None = _ts()
    last_seen: datetime | None = _ts()
