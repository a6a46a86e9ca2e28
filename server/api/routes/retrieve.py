"""An admin asks for the analysis of a study already in PACS: retrieved with C-GET or C-MOVE."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from dicom_node.validation import check_uid
from server.api.deps import Admin, SettingsDep, json_body, json_request_body, task_queue
from server.api.problems import Problem

router = APIRouter(prefix="/retrieve", tags=["retrieve"])


class RetrieveRequest(BaseModel):
    """What to fetch, from where, and how."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="A configured retrieve source, AET@host:port (or just its AE title)")
    study_instance_uid: str
    series_instance_uid: str | None = None
    method: Literal["get", "move"] = "get"

    @field_validator("study_instance_uid", "series_instance_uid")
    @classmethod
    def _uid(cls, value: str | None) -> str | None:
        if value is not None and (problem := check_uid(value)) is not None:
            raise ValueError(f"not a valid UID: {problem}")
        return value


class RetrieveAccepted(BaseModel):
    """The retrieval is queued; the series appear under /series as they arrive."""

    task_id: str
    source: str
    method: str


@router.post("", response_model=RetrieveAccepted, status_code=202, openapi_extra=json_request_body(RetrieveRequest))
def retrieve(
    _caller: Admin,
    body: Annotated[RetrieveRequest, Depends(json_body(RetrieveRequest))],
    request: Request,
    settings: SettingsDep,
) -> RetrieveAccepted:
    """Queue the retrieval of a study (or one series) from a configured source."""
    matches = [s for s in settings.retrieve_sources if s == body.source or s.split("@", 1)[0] == body.source]
    if len(matches) != 1:
        configured = ", ".join(settings.retrieve_sources) or "none"
        raise Problem(422, "Unknown source", f"{body.source!r} is not a configured retrieve source ({configured})")
    task_id = task_queue(request).enqueue_retrieval(
        matches[0], body.study_instance_uid, body.series_instance_uid, body.method
    )
    return RetrieveAccepted(task_id=task_id, source=matches[0], method=body.method)
