"""What a result notification says: the facts of one event, as they were when the series changed state.

The facts are kept with the notification (``Notification.facts``) so that a retry sends the
event as it happened, whatever happened to the series since.  They hold the minimum the
receivers need: identifiers (series, study, accession, Patient ID and its issuer, never the
patient's name or birth date), the state and every reason, and the weight-free headline numbers
of both lungs with their provenance at the precision of the PDF and SR.  Numbers measured on a
mask made with generated demonstration weights are left out (``headline_withheld`` says why):
they are never presented as results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlmodel import Session

from models import PIPELINE_VERSION
from models.findings import HEADLINE_KEYS, PROVENANCE_WORDS
from reports.codes import HEADLINE_UNITS
from reports.precision import HEADLINE_DIGITS, HEADLINE_WORDS
from server.db_models import Job, Series, Study, utcnow

__all__ = ["EventFacts", "EventKind", "HeadlineNumber", "event_facts"]

EventKind = Literal["done", "not_analysable", "failed", "rejected"]

#: Why the headline numbers of a mask made with generated weights are not notified.
GENERATED_WEIGHTS_WITHHELD = (
    "the headline numbers were measured on a lung mask made with generated demonstration weights; "
    "they are not results and are not notified"
)


class HeadlineNumber(BaseModel):
    """One weight-free headline number of both lungs, rounded as the PDF and SR print it, with its provenance."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    name: str
    value: float
    unit: str
    ucum: str
    digits: int
    model: str | None
    provenance: str
    provenance_words: str
    validation: str | None
    validated: bool


class EventFacts(BaseModel):
    """The facts of one event of one series: the content of its webhook and of its FHIR resources."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event: EventKind
    occurred_at: datetime
    series_instance_uid: str
    study_instance_uid: str
    accession_number: str | None
    patient_id: str | None
    issuer_of_patient_id: str | None
    study_date: str | None
    job_id: int | None
    pipeline_version: str
    reasons: list[str]
    headline: list[HeadlineNumber]
    headline_withheld: str | None
    unvalidated: list[str]
    reports: bool

    @property
    def validated(self) -> bool:
        """True when nothing reported with this event is UNVALIDATED and no headline number was withheld."""
        return not self.unvalidated and self.headline_withheld is None


def _headline(result: Mapping[str, Any]) -> tuple[list[HeadlineNumber], str | None]:
    """The headline numbers of result.json, or why they are left out."""
    values = result.get("headline") or {}
    source = result.get("headline_source") or {}
    provenance = source.get("provenance")
    if not values or provenance is None:
        return [], None
    if provenance == "generated_weights":
        return [], GENERATED_WEIGHTS_WITHHELD
    numbers = []
    for key in HEADLINE_KEYS:
        value = values.get(key)
        if value is None:
            continue
        numbers.append(
            HeadlineNumber(
                key=key,
                name=HEADLINE_WORDS[key][0],
                value=round(float(value), HEADLINE_DIGITS[key]),
                unit=HEADLINE_WORDS[key][1],
                ucum=HEADLINE_UNITS[key].value,
                digits=HEADLINE_DIGITS[key],
                model=source.get("model"),
                provenance=provenance,
                provenance_words=PROVENANCE_WORDS.get(provenance, provenance),
                validation=source.get("validation"),
                validated=provenance in ("weight_free", "installed_validated"),
            )
        )
    return numbers, None


def _unvalidated(result: Mapping[str, Any]) -> list[str]:
    """ "model: UNVALIDATED statement" of every model that ran on weights without a validation statement."""
    runs = result.get("models") or {}
    return [
        f"{name}: {run.get('validation')}"
        for name, run in sorted(runs.items())
        if run.get("status") == "ran" and not run.get("validated")
    ]


def event_facts(
    session: Session,
    *,
    event: EventKind,
    series_uid: str,
    job_id: int | None,
    reasons: Sequence[str],
    result: Mapping[str, Any] | None = None,
) -> EventFacts:
    """The facts of ``event`` of ``series_uid`` from the database and, for an analysis, its result.json.

    Raises
    ------
    LookupError
        The series (or its study) is not in the database: nothing can be said about it.
    """
    series = session.get(Series, series_uid)
    study = session.get(Study, series.study_instance_uid) if series is not None else None
    if series is None or study is None:
        raise LookupError(f"series {series_uid} or its study is not in the database")
    job = session.get(Job, job_id) if job_id is not None else None
    headline, withheld = _headline(result) if result is not None else ([], None)
    return EventFacts(
        event=event,
        occurred_at=utcnow(),
        series_instance_uid=series_uid,
        study_instance_uid=study.study_instance_uid,
        accession_number=study.accession_number,
        patient_id=study.patient_id,
        issuer_of_patient_id=study.issuer_of_patient_id,
        study_date=study.study_date,
        job_id=job_id,
        pipeline_version=job.pipeline_version if job is not None else PIPELINE_VERSION,
        reasons=list(reasons),
        headline=headline,
        headline_withheld=withheld,
        unvalidated=_unvalidated(result) if result is not None else [],
        reports=result is not None,
    )
