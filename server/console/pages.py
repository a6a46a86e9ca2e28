"""The console's pages: what viewers and admins read (admin actions are in :mod:`server.console.actions`).

Each page reads through the functions the REST API reads through (:mod:`server.services.listings`,
:mod:`server.services.results`, :mod:`server.services.jobs`, :mod:`server.services.configuration`,
:mod:`server.services.model_status`), so a page and the REST answer never disagree.  Admin
forms are on the same pages and rendered only for admins; the actions refuse viewers anyway.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as FastAPIPath
from fastapi.responses import FileResponse, Response
from pydantic import TypeAdapter, ValidationError
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from server.api.deps import AuditTrailDep, SessionDep, SettingsDep
from server.api.listing import Instant
from server.api.problems import Problem
from server.console.auth import CONSOLE_PREFIX, User
from server.console.dashboard import dashboard
from server.console.key_image import key_image_png
from server.console.rendering import render
from server.console.rules_form import RULE_FIELDS, form_values
from server.console.sessions import ConsoleSession
from server.core.config import OUTPUT_KINDS, Settings
from server.db_models import JobState, SeriesState
from server.routing.destinations import destinations_in_force
from server.services.admin import Gone, NotFound
from server.services.configuration import get_destination, rules_in_force_for
from server.services.jobs import deliveries_of, job_timeline
from server.services.listings import (
    AUDIT_CHANNELS,
    AuditFilter,
    JobFilter,
    SeriesFilter,
    find_audit_events,
    find_jobs,
    find_series,
    series_of,
    studies_of,
)
from server.services.model_status import describe_models
from server.services.reevaluation import MAX_REASON_LENGTH, REEVALUABLE_STATES
from server.services.results import get_series, key_image_file, latest_job, produced_reports, report_file

__all__ = ["PAGE_SIZE", "admin_user", "router"]

router = APIRouter(prefix=CONSOLE_PREFIX)

#: Rows per page of a listing.
PAGE_SIZE = 50
PageNumber = Annotated[int, Query(ge=1, le=10**6)]
#: A job id: positive and within the 64-bit integer range of SQLite and PostgreSQL.
JobId = Annotated[int, FastAPIPath(ge=1, le=2**62)]


def admin_user(user: User) -> ConsoleSession:
    """The logged-in user when an admin; 403 for a viewer (admin pages: audit trail, edit forms)."""
    if not user.is_admin:
        raise Problem(403, "Admin role required", f"this page needs the admin role, you have {user.role!r}")
    return user


AdminUser = Annotated[ConsoleSession, Depends(admin_user)]


def _day(value: str | None, name: str) -> str | None:
    """A date field (``YYYY-MM-DD``, as a date input sends it) as a DICOM date; blank is no filter."""
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").strftime("%Y%m%d")
    except ValueError as exc:
        raise Problem(422, "Invalid date", f"{name}: {value!r} is not a date (YYYY-MM-DD)") from exc


_INSTANT: TypeAdapter[datetime] = TypeAdapter(Instant)


def _moment(value: str | None, name: str) -> datetime | None:
    """A time field (ISO 8601; without an offset it is UTC), as the REST API's filters read it."""
    if not value:
        return None
    try:
        return _INSTANT.validate_python(value)
    except ValidationError as exc:
        raise Problem(422, "Invalid time", f"{name}: {value!r} is not a time (YYYY-MM-DDTHH:MM)") from exc


def _pages(total: int, page: int) -> dict[str, int]:
    """Paging of a listing: this page, the last one, and the rows shown."""
    last = max(1, -(-total // PAGE_SIZE))
    return {"page": page, "last_page": last, "total": total}


@router.get("/", name="dashboard")
def dashboard_page(
    request: Request, user: User, session: SessionDep, settings: SettingsDep, trail: AuditTrailDep
) -> Response:
    """Today's received, analysed and failed series, the queue, the workers, the disk, the oldest waiting job."""
    numbers = dashboard(session, settings, trail, request.app.state.queue)
    return render(request, "dashboard.html", {"board": numbers, "nav": "dashboard"})


@router.get("/series")
def series_list(
    request: Request,
    user: User,
    session: SessionDep,
    q: str = Query("", max_length=200),
    state: str = Query("", max_length=32),
    date_from: str = Query("", max_length=10),
    date_to: str = Query("", max_length=10),
    page: PageNumber = 1,
) -> Response:
    """Series with their patient, accession and study date; filtered by state, study date and search words."""
    filters = SeriesFilter(
        state=state or None,
        search=q or None,
        study_date_from=_day(date_from, "study date from"),
        study_date_to=_day(date_to, "study date to"),
    )
    listing = find_series(session, filters, sort="-last_received_at", limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    studies = studies_of(session, [s.study_instance_uid for s in listing.items])
    rows = [(series, studies.get(series.study_instance_uid)) for series in listing.items]
    states = [value for name, value in vars(SeriesState).items() if name.isupper()]
    query = {"q": q, "state": state, "date_from": date_from, "date_to": date_to}
    context = {"rows": rows, "states": states, "query": query, "nav": "series", **_pages(listing.total, page)}
    return render(request, "series_list.html", context)


def _series_context(session: Session, settings: Settings, series_uid: str) -> dict[str, Any]:
    series = get_series(session, series_uid)
    study = studies_of(session, [series.study_instance_uid]).get(series.study_instance_uid)
    job = latest_job(session, series_uid)
    timeline, deliveries = [], []
    if job is not None and job.id is not None:
        timeline, deliveries = job_timeline(session, job), deliveries_of(session, job.id)
    try:
        key_image_file(session, series_uid)
        key_image = True
    except (NotFound, Gone):  # not analysed, or removed: the page says there is no picture
        key_image = False
    return {
        "series": series,
        "study": study,
        "job": job,
        "timeline": timeline,
        "deliveries": deliveries,
        "reports": produced_reports(session, series_uid),
        "key_image": key_image,
        "reevaluable": series.state in REEVALUABLE_STATES and series.purged_at is None,
        "cancellable": job is not None and job.state in (JobState.QUEUED, JobState.RUNNING),
        "destinations": [entry.address for entry in destinations_in_force(settings).destinations.destinations],
        "max_reason_length": MAX_REASON_LENGTH,
        "nav": "series",
    }


@router.get("/series/{series_uid}")
def series_page(request: Request, series_uid: str, user: User, session: SessionDep, settings: SettingsDep) -> Response:
    """One series: every reason, the job, its timeline and deliveries, the outputs, and (admins) the actions."""
    return render(request, "series.html", _series_context(session, settings, series_uid))


@router.get("/series/{series_uid}/reports/{kind}")
def report_download(series_uid: str, kind: str, user: User, session: SessionDep) -> FileResponse:
    """Download a report object (the REST API's ``GET /series/{uid}/reports/{kind}``, with the console's login)."""
    report = report_file(session, series_uid, kind)
    return FileResponse(report.path, media_type=report.media_type, filename=report.filename)


@router.get("/series/{series_uid}/key-image")
def key_image_page(request: Request, series_uid: str, user: User, session: SessionDep) -> Response:
    """The key-image picture of the analysis, on a page of its own."""
    series = get_series(session, series_uid)
    key_image_file(session, series_uid)
    return render(request, "key_image.html", {"series": series, "nav": "series"})


@router.get("/series/{series_uid}/key-image.png")
async def key_image(series_uid: str, user: User, session: SessionDep) -> Response:
    """The key-image Secondary Capture's pixels as PNG (decoded in a worker thread)."""
    path = await run_in_threadpool(key_image_file, session, series_uid)
    try:
        png = await run_in_threadpool(key_image_png, path)
    except ValueError as exc:
        raise Problem(422, "Key image not shown", str(exc)) from exc
    return Response(png, media_type="image/png")


@router.get("/jobs")
def jobs_list(
    request: Request,
    user: User,
    session: SessionDep,
    state: str = Query("", max_length=32),
    page: PageNumber = 1,
) -> Response:
    """Jobs, newest first, with their series' patient and accession; filtered by state."""
    listing = find_jobs(
        session, JobFilter(state=state or None), sort="-id", limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
    )
    series = series_of(session, [job.series_instance_uid for job in listing.items])
    studies = studies_of(session, [s.study_instance_uid for s in series.values()])
    rows = []
    for job in listing.items:
        one = series.get(job.series_instance_uid)
        rows.append((job, one, studies.get(one.study_instance_uid) if one is not None else None))
    states = [value for name, value in vars(JobState).items() if name.isupper()]
    context = {"rows": rows, "states": states, "query": {"state": state}, "nav": "jobs", **_pages(listing.total, page)}
    return render(request, "jobs.html", context)


@router.get("/destinations")
def destinations_page(request: Request, user: User, settings: SettingsDep, trail: AuditTrailDep) -> Response:
    """The report destinations in force, where they come from; for admins the forms to add, edit, test, remove."""
    in_force = destinations_in_force(settings, trail)
    context = {"in_force": in_force, "outputs": OUTPUT_KINDS, "nav": "destinations"}
    return render(request, "destinations.html", context)


@router.get("/destinations/{ae_title}/edit")
def destination_edit_page(
    request: Request, ae_title: str, user: AdminUser, settings: SettingsDep, trail: AuditTrailDep
) -> Response:
    """The form changing one destination (admins)."""
    entry = get_destination(settings, ae_title, trail)
    return render(request, "destination_edit.html", {"entry": entry, "outputs": OUTPUT_KINDS, "nav": "destinations"})


@router.get("/destinations/{ae_title}/remove")
def destination_remove_page(
    request: Request, ae_title: str, user: AdminUser, settings: SettingsDep, trail: AuditTrailDep
) -> Response:
    """Asks an admin to confirm removing one destination."""
    entry = get_destination(settings, ae_title, trail)
    return render(request, "destination_remove.html", {"entry": entry, "nav": "destinations"})


@router.get("/rules")
def rules_page(request: Request, user: User, settings: SettingsDep, trail: AuditTrailDep) -> Response:
    """The eligibility rules in force, where they come from; for admins the editor."""
    in_force = rules_in_force_for(settings, trail)
    context = {
        "in_force": in_force,
        "fields": RULE_FIELDS,
        "values": form_values(in_force.rules),
        "error": None,
        "nav": "rules",
    }
    return render(request, "rules.html", context)


@router.get("/models")
def models_page(request: Request, user: User, settings: SettingsDep, trail: AuditTrailDep) -> Response:
    """Every model, whether it can run, and the weights installed for it with their validation statement."""
    return render(request, "models.html", {"models": describe_models(settings, trail), "nav": "models"})


@router.get("/audit")
def audit_page(
    request: Request,
    user: AdminUser,
    session: SessionDep,
    channel: str = Query("", max_length=16),
    actor: str = Query("", max_length=200),
    outcome: str = Query("", max_length=64),
    since: str = Query("", max_length=40),
    until: str = Query("", max_length=40),
    page: PageNumber = 1,
) -> Response:
    """The audit trail, newest first, filtered by channel, actor, outcome and time (admins, as ``GET /audit``)."""
    if channel and channel not in AUDIT_CHANNELS:
        raise Problem(422, "Unknown channel", f"channel must be one of {', '.join(AUDIT_CHANNELS)}")
    filters = AuditFilter(
        channel=channel or None,
        actor=actor or None,
        outcome=outcome or None,
        since=_moment(since, "since"),
        until=_moment(until, "until"),
    )
    listing = find_audit_events(session, filters, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    query = {"channel": channel, "actor": actor, "outcome": outcome, "since": since, "until": until}
    context = {
        "events": listing.items,
        "channels": AUDIT_CHANNELS,
        "query": query,
        "nav": "audit",
        **_pages(listing.total, page),
    }
    return render(request, "audit.html", context)
