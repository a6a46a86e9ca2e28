"""Series: state, eligibility reasons, their job, results and report downloads; re-evaluation by admins."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict
from sqlmodel import Session

from server.api.deps import (
    Admin,
    AuditTrailDep,
    SessionDep,
    SettingsDep,
    Viewer,
    json_body,
    json_object,
    json_request_body,
    task_queue,
)
from server.api.listing import Instant
from server.api.routes.jobs import job_public
from server.api.schemas import EligibilityOverridePublic, Page, ReevaluationPublic, SeriesPublic
from server.db_models import Series
from server.services.listings import SeriesFilter, find_series
from server.services.reevaluation import EligibilityOverride, reevaluate_series
from server.services.results import get_series as find_one_series
from server.services.results import latest_job, report_file, result_document

router = APIRouter(prefix="/series", tags=["series"])


def series_public(session: Session, series: Series) -> SeriesPublic:
    """The public view of a series, with its current job."""
    job = latest_job(session, series.series_instance_uid)
    data = series.model_dump()
    data["job"] = job_public(session, job) if job else None
    return SeriesPublic(**data)


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
    filters = SeriesFilter(
        state=state,
        study_uid=study_uid,
        patient_id=patient_id,
        accession_number=accession_number,
        received_from=received_from,
        received_to=received_to,
    )
    listing = find_series(session, filters, sort=sort, limit=limit, offset=offset)
    items = [series_public(session, r) for r in listing.items]
    return Page(total=listing.total, limit=limit, offset=offset, items=items)


@router.get("/{series_uid}", response_model=SeriesPublic)
def get_series(series_uid: str, session: SessionDep, _key: Viewer) -> SeriesPublic:
    """One series with its state, reasons and job."""
    return series_public(session, find_one_series(session, series_uid))


@router.get("/{series_uid}/result")
def get_result(series_uid: str, session: SessionDep, _key: Viewer) -> dict[str, Any]:
    """The series' result.json (findings, model statuses, eligibility)."""
    return result_document(session, series_uid)


@router.get("/{series_uid}/reports/{kind}")
def get_report(series_uid: str, kind: str, session: SessionDep, _key: Viewer) -> FileResponse:
    """Download a report object: ``pdf``, ``sr``, ``seg`` (lungs), ``seg-lobes``, ``seg-lesions`` or ``pdf-dicom``."""
    report = report_file(session, series_uid, kind)
    return FileResponse(report.path, media_type=report.media_type, filename=report.filename)


class ReevaluateRequest(BaseModel):
    """Optional: ``override`` has the series analysed although technical eligibility criteria fail."""

    model_config = ConfigDict(extra="forbid")

    override: EligibilityOverride | None = None


async def _reevaluate_request(request: Request, _caller: Admin) -> ReevaluateRequest:
    """The body when one is sent (validated off the event loop), else no override."""
    if not await request.body():
        return ReevaluateRequest()
    return await json_body(ReevaluateRequest)(await json_object(request))


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
        enqueue=task_queue(request).enqueue_analysis,
    )
    if not outcome.queued:
        response.status_code = 200
    series = find_one_series(session, series_uid)
    session.refresh(series)
    override = outcome.eligibility_override
    return ReevaluationPublic(
        eligible=outcome.eligible,
        queued=outcome.queued,
        reasons=list(outcome.reasons),
        eligibility_override=EligibilityOverridePublic(**override) if override is not None else None,
        series=series_public(session, series),
    )
