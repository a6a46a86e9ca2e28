"""Public shapes of the REST API (what admins and viewers see)."""

from __future__ import annotations

from datetime import datetime
from typing import Generic, TypeVar

from pydantic import BaseModel, Field

__all__ = [
    "DeliveryPublic",
    "EligibilityOverridePublic",
    "Health",
    "JobPublic",
    "NotificationPublic",
    "Page",
    "ReevaluationPublic",
    "SeriesPublic",
    "StudyPublic",
]

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """A page of a listing."""

    total: int
    limit: int
    offset: int
    items: list[T]


class StudyPublic(BaseModel):
    """A study and its patient context (viewer role: clinical staff)."""

    study_instance_uid: str
    patient_id: str | None
    patient_name: str | None
    accession_number: str | None
    study_date: str | None
    study_description: str | None
    series_count: int


class DeliveryPublic(BaseModel):
    """One report object's delivery to one destination."""

    id: int
    destination: str
    kind: str
    sop_instance_uid: str
    state: str
    attempts: int
    last_error: str | None
    sent_at: datetime | None


class NotificationPublic(BaseModel):
    """One result notification (webhook or FHIR) of a series' event to one receiver."""

    id: int
    job_id: int | None
    series_instance_uid: str
    event: str = Field(description="done, not_analysable, failed or rejected")
    channel: str = Field(description="webhook or fhir")
    receiver: str = Field(description="The receiver's URL, without user information or query")
    state: str = Field(description="pending, sending, sent or refused (a permanent refusal, not retried)")
    attempts: int
    failures: int = Field(description="Attempts that failed and were retried")
    last_error: str | None
    response_status: int | None = Field(description="HTTP status of the last answer")
    created_at: datetime | None
    next_attempt_at: datetime | None
    sent_at: datetime | None


class EligibilityOverridePublic(BaseModel):
    """An admin's decision to analyse a series although it fails the eligibility rules."""

    reason: str
    by: str = Field(description="Who decided: the API key (apikey:ID) or OIDC subject (oidc:SUB)")
    at: datetime
    reasons: list[str] = Field(description="The rules' reasons that were overridden")


class JobPublic(BaseModel):
    """An analysis job: state, timings and error."""

    id: int
    series_instance_uid: str
    pipeline_version: str
    state: str
    revision: int
    attempts: int
    error: str | None
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    lease_until: datetime | None = None
    held_for: str | None = Field(None, description="Why a queued job is held back (e.g. the disk is full)")
    timings: dict[str, float]
    eligibility_override: EligibilityOverridePublic | None = Field(
        None, description="Set when an admin had the series analysed although it fails the eligibility rules"
    )
    deliveries: list[DeliveryPublic] = []
    notifications: list[NotificationPublic] = Field(
        default_factory=list, description="Result notifications of this job's events (webhooks, FHIR)"
    )


class SeriesPublic(BaseModel):
    """A received series, where it stands, and every reason it was not analysed."""

    series_instance_uid: str
    study_instance_uid: str
    modality: str | None
    series_number: int | None
    series_description: str | None
    state: str
    reasons: list[str]
    identity_conflicts: list[str] = Field(
        default_factory=list, description="How arriving instances disagreed on whose images these are"
    )
    instance_count: int
    reopen_count: int
    completion_trigger: str | None
    first_received_at: datetime | None
    last_received_at: datetime | None
    completed_at: datetime | None
    purged_at: datetime | None = None
    job: JobPublic | None = None


class ReevaluationPublic(BaseModel):
    """What re-evaluating a series under the rules in force decided, and the series now."""

    eligible: bool = Field(description="Eligible under the rules in force now (false also when overridden)")
    queued: bool = Field(description="Its job was queued: eligible now, or overridden")
    reasons: list[str] = Field(description="Every reason it is not eligible now")
    eligibility_override: EligibilityOverridePublic | None = Field(
        None, description="The override recorded on the job, when one was needed"
    )
    series: SeriesPublic


class Health(BaseModel):
    """Liveness and the state of the parts the server depends on."""

    status: str
    version: str
    database: str
    spool_free_mb: float
