"""Series: state, eligibility reasons, their job, results and report downloads; re-evaluation by admins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy import func
from sqlmodel import Session, col, select

from server.api.deps import (
    Admin,
    AuditTrailDep,
    SessionDep,
    SettingsDep,
    Viewer,
    json_body,
    json_object,
    json_request_body,
)
from server.api.listing import Instant, order_by
from server.api.problems import Problem
from server.api.routes.jobs import job_public
from server.api.schemas import EligibilityOverridePublic, Page, ReevaluationPublic, SeriesPublic
from server.db_models import Job, Series, Study
from server.routing.intake import EnqueueAnalysis
from server.services.reevaluation import EligibilityOverride, reevaluate_series

router = APIRouter(prefix="/series", tags=["series"])

#: Report downloads: URL name → (file name in the result folder, media type).
REPORT_FILES: dict[str, tuple[str, str]] = {
    "pdf": ("report.pdf", "application/pdf"),
    "sr": ("sr.dcm", "application/dicom"),
    "seg": ("seg.dcm", "application/dicom"),
    "seg-lobes": ("seg_lobes.dcm", "application/dicom"),
    "seg-lesions": ("seg_lesions.dcm", "application/dicom"),
    "pdf-dicom": ("report_pdf.dcm", "application/dicom"),
}


def _latest_job(session: Session, series_uid: str) -> Job | None:
    return session.exec(select(Job).where(Job.series_instance_uid == series_uid).order_by(col(Job.id).desc())).first()


def series_public(session: Session, series: Series) -> SeriesPublic:
    """The public view of a series, with its current job."""
    job = _latest_job(session, series.series_instance_uid)
    data = series.model_dump()
    data["job"] = job_public(session, job) if job else None
    return SeriesPublic(**data)


_SERIES_SORT = {
    "last_received_at": col(Series.last_received_at),
    "first_received_at": col(Series.first_received_at),
    "completed_at": col(Series.completed_at),
    "state": col(Series.state),
    "series_number": col(Series.series_number),
}


@router.get("", response_model=Page[SeriesPublic])
def list_series(
    session: SessionDep,
    _key: Viewer,
    state: str | None = Query(None, max_length=32),
    study_uid: str | None = Query(None, max_length=64),
    patient_id: str | None = Query(None, max_length=64),
    accession_number: str | None = Query(None, max_length=64),
    received_from: Instant | None = None,
    received_to: Instant | None = None,
    sort: str = Query("-last_received_at", max_length=40),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=2**62),
) -> Page[SeriesPublic]:
    """Series, filtered by state, study, patient, accession and receipt time; most recent first by default."""
    stmt = select(Series)
    if state:
        stmt = stmt.where(Series.state == state)
    if study_uid:
        stmt = stmt.where(Series.study_instance_uid == study_uid)
    if patient_id or accession_number:
        stmt = stmt.join(Study, col(Study.study_instance_uid) == col(Series.study_instance_uid))
        if patient_id:
            stmt = stmt.where(Study.patient_id == patient_id)
        if accession_number:
            stmt = stmt.where(Study.accession_number == accession_number)
    if received_from:
        stmt = stmt.where(col(Series.last_received_at) >= received_from)
    if received_to:
        stmt = stmt.where(col(Series.last_received_at) <= received_to)
    total = session.exec(select(func.count()).select_from(stmt.subquery())).one()
    rows = session.exec(stmt.order_by(order_by(sort, _SERIES_SORT)).offset(offset).limit(limit)).all()
    return Page(total=total, limit=limit, offset=offset, items=[series_public(session, r) for r in rows])


def _get_series(session: Session, series_uid: str) -> Series:
    series = session.get(Series, series_uid)
    if series is None:
        raise Problem(404, "Series not found", f"no series with Series Instance UID {series_uid}")
    return series


@router.get("/{series_uid}", response_model=SeriesPublic)
def get_series(series_uid: str, session: SessionDep, _key: Viewer) -> SeriesPublic:
    """One series with its state, reasons and job."""
    return series_public(session, _get_series(session, series_uid))


def _result_dir(session: Session, series_uid: str) -> Path:
    series = _get_series(session, series_uid)
    if series.purged_at is not None:
        raise Problem(
            410,
            "Results removed",
            f"the files of series {series_uid} were removed on {series.purged_at:%Y-%m-%d} by the retention policy",
        )
    job = _latest_job(session, series_uid)
    if job is None or job.result_dir is None:
        raise Problem(404, "No results", f"series {series_uid} has no completed analysis")
    return Path(job.result_dir)


@router.get("/{series_uid}/result")
def get_result(series_uid: str, session: SessionDep, _key: Viewer) -> dict[str, Any]:
    """The series' result.json (findings, model statuses, eligibility)."""
    path = _result_dir(session, series_uid) / "result.json"
    if not path.is_file():
        raise Problem(404, "No results", f"result.json of series {series_uid} is missing")
    result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return result


@router.get("/{series_uid}/reports/{kind}")
def get_report(series_uid: str, kind: str, session: SessionDep, _key: Viewer) -> FileResponse:
    """Download a report object: ``pdf``, ``sr``, ``seg`` (lungs), ``seg-lobes``, ``seg-lesions`` or ``pdf-dicom``."""
    if kind not in REPORT_FILES:
        raise Problem(404, "Unknown report", f"report kind must be one of {', '.join(REPORT_FILES)}")
    name, media_type = REPORT_FILES[kind]
    path = _result_dir(session, series_uid) / name
    if not path.is_file():
        raise Problem(404, "Report not produced", f"the analysis of {series_uid} produced no {name}")
    return FileResponse(path, media_type=media_type, filename=name)


class ReevaluateRequest(BaseModel):
    """Optional: ``override`` has the series analysed although technical eligibility criteria fail."""

    model_config = ConfigDict(extra="forbid")

    override: EligibilityOverride | None = None


async def _reevaluate_request(request: Request, _caller: Admin) -> ReevaluateRequest:
    """The body when one is sent (validated off the event loop), else no override."""
    if not await request.body():
        return ReevaluateRequest()
    return await json_body(ReevaluateRequest)(await json_object(request))


def _enqueue(request: Request) -> EnqueueAnalysis:
    """The queue's analysis entry point; 503 before anything changes when this API has no queue."""
    queue = request.app.state.queue
    if queue is None:
        raise Problem(503, "No queue", "this API instance has no task queue configured")
    enqueue: EnqueueAnalysis = queue.enqueue_analysis
    return enqueue


def _optional_body() -> dict[str, Any]:
    extra = json_request_body(ReevaluateRequest)
    extra["requestBody"]["required"] = False
    return extra


@router.post(
    "/{series_uid}/reevaluate",
    response_model=ReevaluationPublic,
    status_code=202,
    openapi_extra=_optional_body(),
    responses={
        200: {
            "model": ReevaluationPublic,
            "description": "Still not eligible under the rules in force: not queued, every reason listed",
        },
        202: {"description": "Eligible now, or overridden: its job is queued"},
        404: {"description": "No such series"},
        409: {"description": "Not rejected or ignored (re-queue its job), changed meanwhile, or override refused"},
        422: {"description": "An invalid override (reason missing, too long, or with control characters)"},
    },
)
def reevaluate(
    series_uid: str,
    caller: Admin,
    body: Annotated[ReevaluateRequest, Depends(_reevaluate_request)],
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    trail: AuditTrailDep,
) -> ReevaluationPublic:
    """Judge a rejected or ignored series again under the rules in force now; queue it when eligible.

    202 with the series and its queued job when it is eligible now (or overridden); 200 with every
    reason when it is still not eligible (its reasons are updated, nothing is queued).  An
    ``override`` with a ``reason`` analyses it although technical criteria fail, never when its
    instances disagree on whose images they are or when it is no CT image series (409).
    """
    outcome = reevaluate_series(
        session,
        settings,
        trail,
        caller.actor,
        series_uid,
        override=body.override,
        enqueue=_enqueue(request),
    )
    if not outcome.queued:
        response.status_code = 200
    series = _get_series(session, series_uid)
    session.refresh(series)
    override = outcome.eligibility_override
    return ReevaluationPublic(
        eligible=outcome.eligible,
        queued=outcome.queued,
        reasons=list(outcome.reasons),
        eligibility_override=EligibilityOverridePublic(**override) if override is not None else None,
        series=series_public(session, series),
    )
