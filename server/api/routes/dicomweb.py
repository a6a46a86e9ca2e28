"""DICOMweb: the STOW-RS store transaction (PS3.18 10.5), ``POST /dicomweb/studies[/{study}]``.

The DICOMweb base URL of lungcds is ``/api/v1/dicomweb``.  The body is ``multipart/related;
type="application/dicom"``, one Part 10 instance per part; it streams to disk part by part and
each part is stored, as it completes, by :class:`server.services.dicomweb_store.StowReception`
(the path of a C-STORE).  Any authenticated caller may send, unless
``LUNGCDS_DICOMWEB_ALLOWED_SENDERS`` lists who may (403 for the others, before the body is read);
the body may be as large as ``LUNGCDS_MAX_STOW_REQUEST_MB`` (413).
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from dicom_node.scp import AssociationInfo
from server.api.deps import AuditTrailDep, SettingsDep, Viewer
from server.api.problems import Problem
from server.audit import AuditTrail
from server.core.config import Settings
from server.services.dicomweb_multipart import (
    STOW_INCOMING,
    MultipartError,
    PartWriter,
    UnsupportedMediaType,
    related_boundary,
)
from server.services.dicomweb_store import SenderRefused, StowReception, check_sender, valid_uid

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

#: The store routes below the router's prefix (they have their own body limit, LUNGCDS_MAX_STOW_REQUEST_MB).
STORE_PATHS = ("/studies", "/studies/{study}")
#: The media type of the Store Instances Response (PS3.18 10.5.3, DICOM JSON).
DICOM_JSON = "application/dicom+json"
#: Bytes of the body gathered before they are written in a worker thread.
_FLUSH_BYTES = 256 * 2**10

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Every instance stored", "content": {DICOM_JSON: {}}},
    202: {
        "description": "Some instances stored, others refused (Failed SOP Sequence, Warning)",
        "content": {DICOM_JSON: {}},
    },
    400: {"description": "Not a multipart body, truncated, no part, or an invalid Study Instance UID"},
    403: {"description": "The caller is not in LUNGCDS_DICOMWEB_ALLOWED_SENDERS"},
    409: {
        "description": "No instance stored (Failed SOP Sequence with each Failure Reason, Warning)",
        "content": {DICOM_JSON: {}},
    },
    413: {"description": "The body exceeds LUNGCDS_MAX_STOW_REQUEST_MB"},
    415: {"description": 'Not multipart/related; type="application/dicom"'},
    503: {"description": "No analysis queue"},
}
_BODY = {
    "requestBody": {
        "required": True,
        "content": {'multipart/related; type="application/dicom"': {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post("/studies", responses=_RESPONSES, openapi_extra=_BODY, response_class=JSONResponse)
async def store_instances(request: Request, caller: Viewer, settings: SettingsDep, trail: AuditTrailDep) -> Response:
    """Store the DICOM instances of the request (STOW-RS, PS3.18 10.5); the Store Instances Response."""
    return await _store(request, caller.actor, settings, trail, None)


@router.post("/studies/{study}", responses=_RESPONSES, openapi_extra=_BODY, response_class=JSONResponse)
async def store_study_instances(
    study: str, request: Request, caller: Viewer, settings: SettingsDep, trail: AuditTrailDep
) -> Response:
    """Store instances of the study ``study``; instances of another study are refused (Failure Reason 0xC409)."""
    if not valid_uid(study):
        raise Problem(400, "Invalid Study Instance UID", "the study in the URL is not a UID (PS3.5 9.1)")
    return await _store(request, caller.actor, settings, trail, study)


async def _store(request: Request, actor: str, settings: Settings, trail: AuditTrail, study: str | None) -> Response:
    """Check the sender and the media type, then stream the parts into a :class:`StowReception`."""
    queue = request.app.state.queue
    if queue is None:
        raise Problem(503, "No queue", "received series could not be queued for analysis here")
    client = request.client
    source = f"{client.host}:{client.port}" if client else None
    try:
        await run_in_threadpool(check_sender, settings, trail, actor, source)
    except SenderRefused as exc:
        raise Problem(403, "Sender not allowed", str(exc)) from exc
    try:
        boundary = related_boundary(request.headers.get("content-type"))
    except UnsupportedMediaType as exc:
        raise Problem(415, "Unsupported media type", str(exc)) from exc
    except MultipartError as exc:
        raise Problem(400, "Invalid multipart body", str(exc)) from exc
    origin = AssociationInfo(
        id=getattr(request.state, "audit_request", None) or uuid.uuid4().hex,
        calling_aet=actor,
        called_aet=settings.ae_title,
        peer_host=client.host if client else "",
        peer_port=client.port if client else 0,
    )
    reception = await run_in_threadpool(
        lambda: StowReception(
            settings=settings,
            engine=request.app.state.engine,
            trail=trail,
            enqueue=queue.enqueue_analysis,
            origin=origin,
            study_uid=study,
        )
    )
    writer = await run_in_threadpool(PartWriter, boundary, settings.data_dir / STOW_INCOMING)
    completed = False
    try:
        pending = bytearray()
        async for chunk in request.stream():
            pending += chunk
            if len(pending) >= _FLUSH_BYTES:
                await _take(writer, reception, bytes(pending))
                pending.clear()
        await _take(writer, reception, bytes(pending))
        await run_in_threadpool(writer.close)
        completed = True
    except MultipartError as exc:
        raise Problem(400, "Invalid multipart body", f"{exc}; {reception.stored} instance(s) stored before") from exc
    except ClientDisconnect as exc:  # nobody reads the answer; the audit trail has the request as aborted
        raise Problem(400, "Request broken off", f"{reception.stored} instance(s) stored before") from exc
    except Problem as exc:
        if exc.status != 413:
            raise
        raise Problem(413, exc.title, f"{exc.detail}; {reception.stored} instance(s) stored before") from exc
    finally:
        await run_in_threadpool(writer.discard)
        await run_in_threadpool(lambda: reception.finish(completed=completed))
    if not reception.results:
        raise Problem(400, "No instance", "the multipart body has no part")
    answer = await run_in_threadpool(reception.answer)
    response = JSONResponse(answer.body, status_code=answer.status, media_type=DICOM_JSON)
    for warning in answer.warnings:
        response.headers.append("Warning", warning)
    return response


async def _take(writer: PartWriter, reception: StowReception, data: bytes) -> None:
    """Write ``data`` to the parts' files, then store each part it completed (in worker threads)."""
    for part in await run_in_threadpool(writer.feed, data):
        await run_in_threadpool(reception.store, part)
