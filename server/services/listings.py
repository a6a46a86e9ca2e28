"""Listings of series, jobs and audit events with their filters, whoever asks (REST API, HTML console).

One query per listing, so that a filter means the same thing on ``GET /api/v1/series`` and on the
console's series page.  The console adds a free-text search (:attr:`SeriesFilter.search`) and a
study-date range; the REST API does not send them, so its answers are unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, func, or_
from sqlmodel import Session, col, select

from server.db_models import AuditEvent, Job, Series, Study
from server.services.admin import Invalid

__all__ = [
    "AUDIT_CHANNELS",
    "JOB_SORT",
    "SERIES_SORT",
    "AuditFilter",
    "JobFilter",
    "Listing",
    "SeriesFilter",
    "find_audit_events",
    "find_jobs",
    "find_series",
    "order_by",
    "series_of",
    "studies_of",
]

T = TypeVar("T")

#: Channels of the audit trail: API requests, DICOM associations, admin files read, admin changes.
AUDIT_CHANNELS: tuple[str, ...] = ("api", "dicom", "config", "admin")
#: Longest search text; a search is a few words, never a document.
MAX_SEARCH_LENGTH = 200


@dataclass(frozen=True)
class Listing(Generic[T]):
    """One page of a listing and how many rows match in all."""

    total: int
    items: list[T]


def order_by(sort: str, columns: Mapping[str, Any]) -> ColumnElement[Any]:
    """The ORDER BY clause for ``sort`` (e.g. ``-last_received_at``); :class:`Invalid` for an unknown column."""
    descending = sort.startswith("-")
    name = sort.lstrip("+-")
    if name not in columns:
        raise Invalid("Unknown sort key", f"sort by one of {', '.join(sorted(columns))} (prefix - to reverse)")
    column = columns[name]
    clause: ColumnElement[Any] = column.desc() if descending else column.asc()
    return clause


def _page(session: Session, stmt: Select[Any], order: ColumnElement[Any], limit: int, offset: int) -> Listing[Any]:
    total = session.exec(select(func.count()).select_from(stmt.subquery())).one()
    rows = session.exec(stmt.order_by(order).offset(offset).limit(limit)).all()  # type: ignore[call-overload]
    return Listing(total=int(total), items=list(rows))


SERIES_SORT: Mapping[str, Any] = {
    "last_received_at": col(Series.last_received_at),
    "first_received_at": col(Series.first_received_at),
    "completed_at": col(Series.completed_at),
    "state": col(Series.state),
    "series_number": col(Series.series_number),
}


@dataclass(frozen=True)
class SeriesFilter:
    """What a series listing keeps; every field left None keeps everything.

    ``search`` is words that must each appear (case-insensitively) in the patient's name or ID,
    the accession number, the series description or the series' or study's UID; the words of a
    DICOM name (``Doe^Jane``) match in any order.  ``study_date_from`` and ``study_date_to`` are
    DICOM dates (``YYYYMMDD``), inclusive.
    """

    state: str | None = None
    study_uid: str | None = None
    patient_id: str | None = None
    accession_number: str | None = None
    received_from: datetime | None = None
    received_to: datetime | None = None
    search: str | None = None
    study_date_from: str | None = None
    study_date_to: str | None = None

    @property
    def needs_study(self) -> bool:
        """True when a filter looks at the study's columns."""
        return any((self.patient_id, self.accession_number, self.search, self.study_date_from, self.study_date_to))


def _escaped(word: str) -> str:
    """``word`` for a LIKE pattern: its ``%``, ``_`` and ``\\`` match themselves."""
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _search_words(text: str) -> list[str]:
    """The words of a search: split at spaces and at the ``^`` of DICOM person names."""
    return [word for word in text[:MAX_SEARCH_LENGTH].replace("^", " ").lower().split() if word]


def _matches_word(word: str) -> ColumnElement[bool]:
    pattern = f"%{_escaped(word)}%"
    columns = (
        col(Study.patient_name),
        col(Study.patient_id),
        col(Study.accession_number),
        col(Series.series_description),
        col(Series.series_instance_uid),
        col(Series.study_instance_uid),
    )
    return or_(*(func.lower(column).like(pattern, escape="\\") for column in columns))


def find_series(session: Session, filters: SeriesFilter, *, sort: str, limit: int, offset: int) -> Listing[Series]:
    """Series matching ``filters``, ordered by ``sort`` (:data:`SERIES_SORT`), one page.

    Raises
    ------
    Invalid
        ``sort`` names no column of :data:`SERIES_SORT`.
    """
    order = order_by(sort, SERIES_SORT)
    stmt = select(Series)
    if filters.state:
        stmt = stmt.where(Series.state == filters.state)
    if filters.study_uid:
        stmt = stmt.where(Series.study_instance_uid == filters.study_uid)
    if filters.needs_study:
        stmt = stmt.join(Study, col(Study.study_instance_uid) == col(Series.study_instance_uid))
        if filters.patient_id:
            stmt = stmt.where(Study.patient_id == filters.patient_id)
        if filters.accession_number:
            stmt = stmt.where(Study.accession_number == filters.accession_number)
        if filters.study_date_from:
            stmt = stmt.where(col(Study.study_date) >= filters.study_date_from)
        if filters.study_date_to:
            stmt = stmt.where(col(Study.study_date) <= filters.study_date_to)
        for word in _search_words(filters.search or ""):
            stmt = stmt.where(_matches_word(word))
    if filters.received_from:
        stmt = stmt.where(col(Series.last_received_at) >= filters.received_from)
    if filters.received_to:
        stmt = stmt.where(col(Series.last_received_at) <= filters.received_to)
    return _page(session, stmt, order, limit, offset)


def studies_of(session: Session, study_uids: Iterable[str]) -> dict[str, Study]:
    """The studies of these UIDs, by UID (the patient, accession and date shown beside their series)."""
    uids = sorted(set(study_uids))
    if not uids:
        return {}
    return {s.study_instance_uid: s for s in session.exec(select(Study).where(col(Study.study_instance_uid).in_(uids)))}


def series_of(session: Session, series_uids: Sequence[str]) -> dict[str, Series]:
    """The series of these UIDs, by UID (beside their jobs)."""
    uids = sorted(set(series_uids))
    if not uids:
        return {}
    rows = session.exec(select(Series).where(col(Series.series_instance_uid).in_(uids)))
    return {s.series_instance_uid: s for s in rows}


JOB_SORT: Mapping[str, Any] = {
    "id": col(Job.id),
    "queued_at": col(Job.queued_at),
    "started_at": col(Job.started_at),
    "finished_at": col(Job.finished_at),
    "state": col(Job.state),
}


@dataclass(frozen=True)
class JobFilter:
    """What a job listing keeps: its state and when it was queued (None keeps everything)."""

    state: str | None = None
    queued_from: datetime | None = None
    queued_to: datetime | None = None


def find_jobs(session: Session, filters: JobFilter, *, sort: str, limit: int, offset: int) -> Listing[Job]:
    """Jobs matching ``filters``, ordered by ``sort`` (:data:`JOB_SORT`), one page (:class:`Invalid` sort)."""
    order = order_by(sort, JOB_SORT)
    stmt = select(Job)
    if filters.state:
        stmt = stmt.where(Job.state == filters.state)
    if filters.queued_from:
        stmt = stmt.where(col(Job.queued_at) >= filters.queued_from)
    if filters.queued_to:
        stmt = stmt.where(col(Job.queued_at) <= filters.queued_to)
    return _page(session, stmt, order, limit, offset)


@dataclass(frozen=True)
class AuditFilter:
    """What an audit listing keeps: channel, actor and outcome (exact), a time range (None keeps everything)."""

    channel: str | None = None
    actor: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def find_audit_events(session: Session, filters: AuditFilter, *, limit: int, offset: int) -> Listing[AuditEvent]:
    """Audit events matching ``filters``, newest first, one page."""
    stmt = select(AuditEvent)
    if filters.channel:
        stmt = stmt.where(AuditEvent.channel == filters.channel)
    if filters.actor:
        stmt = stmt.where(AuditEvent.actor == filters.actor)
    if filters.outcome:
        stmt = stmt.where(AuditEvent.outcome == filters.outcome)
    if filters.since:
        stmt = stmt.where(col(AuditEvent.at) >= filters.since)
    if filters.until:
        stmt = stmt.where(col(AuditEvent.at) <= filters.until)
    return _page(session, stmt, col(AuditEvent.id).desc(), limit, offset)
