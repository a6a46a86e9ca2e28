"""Report destinations: listed for viewers; replaced whole, or one by one by AE title, by admins.

Every change is validated, optionally C-ECHOed (``?verify=true``), stored atomically and read
back by :mod:`server.services.configuration`, which the HTML console calls too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field, ValidationError

from server.api.deps import Admin, AuditTrailDep, JsonObject, SettingsDep, Viewer, json_body, json_request_body
from server.api.problems import Problem
from server.routing.destinations import DestinationEntry, DestinationList, DestinationsInForce, destinations_in_force
from server.services.configuration import (
    create_destination,
    delete_destination,
    echo_destination,
    get_destination,
    replace_destination,
    replace_destinations,
)

router = APIRouter(prefix="/destinations", tags=["destinations"])

Verify = Annotated[bool, Query(description="C-ECHO the destination(s) first; nothing changes unless each answers")]


class DestinationsPublic(DestinationList):
    """The destinations in force, where they come from and, when the admin's file is broken, why.

    ``source`` and ``error`` are read-only: ``PUT /destinations`` ignores them, so that a
    listing can be edited and sent back.
    """

    source: Literal["file", "last good copy", "settings"]
    error: str | None


class EchoPublic(BaseModel):
    """Whether a destination answered a C-ECHO just now."""

    ae_title: str
    address: str
    tls: bool = Field(description="The C-ECHO went over TLS, as the reports do")
    answered: bool
    detail: str


_READ_ONLY = frozenset(set(DestinationsPublic.model_fields) - set(DestinationList.model_fields))
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No destination has this AE title"}}
_INVALID: dict[int | str, dict[str, Any]] = {422: {"description": "Invalid, or silent with verify; nothing changed"}}


def _public(in_force: DestinationsInForce) -> DestinationsPublic:
    return DestinationsPublic(
        destinations=in_force.destinations.destinations, source=in_force.source, error=in_force.error
    )


@router.get("", response_model=DestinationsPublic)
def get_destinations(_caller: Viewer, settings: SettingsDep, trail: AuditTrailDep) -> DestinationsPublic:
    """The destinations in force (and why the destinations file is not, when it is broken)."""
    return _public(destinations_in_force(settings, trail))


@router.put("", response_model=DestinationsPublic, openapi_extra=json_request_body(DestinationList), responses=_INVALID)
def put_destinations(
    caller: Admin, settings: SettingsDep, trail: AuditTrailDep, body: JsonObject, verify: Verify = False
) -> DestinationsPublic:
    """Replace the whole destination list; nothing changes unless every entry is valid (and answers, with verify)."""
    try:
        destinations = DestinationList.model_validate({k: v for k, v in body.items() if k not in _READ_ONLY})
    except ValidationError as exc:
        raise Problem(422, "Invalid destinations", str(exc)) from exc
    return _public(replace_destinations(settings, trail, caller.actor, destinations, verify=verify))


@router.post(
    "",
    response_model=DestinationEntry,
    status_code=201,
    openapi_extra=json_request_body(DestinationEntry),
    responses={409: {"description": "The address or its AE title is listed already"}, **_INVALID},
)
def post_destination(
    caller: Admin,
    settings: SettingsDep,
    trail: AuditTrailDep,
    entry: Annotated[DestinationEntry, Depends(json_body(DestinationEntry))],
    request: Request,
    response: Response,
    verify: Verify = False,
) -> DestinationEntry:
    """Add one destination (the settings' list becomes the admin's file at the first edit); 201 with its URL."""
    created = create_destination(settings, trail, caller.actor, entry, verify=verify)
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{quote(created.ae_title, safe='')}"
    return created


@router.get("/{ae_title}", response_model=DestinationEntry, responses=_NOT_FOUND)
def get_one_destination(
    ae_title: str, _caller: Viewer, settings: SettingsDep, trail: AuditTrailDep
) -> DestinationEntry:
    """The destination with this AE title."""
    return get_destination(settings, ae_title, trail)


@router.put(
    "/{ae_title}",
    response_model=DestinationEntry,
    openapi_extra=json_request_body(DestinationEntry),
    responses={**_NOT_FOUND, **_INVALID},
)
def put_destination(
    ae_title: str,
    caller: Admin,
    settings: SettingsDep,
    trail: AuditTrailDep,
    entry: Annotated[DestinationEntry, Depends(json_body(DestinationEntry))],
    verify: Verify = False,
) -> DestinationEntry:
    """Replace the destination with this AE title; the new entry keeps the AE title (422 otherwise)."""
    return replace_destination(settings, trail, caller.actor, ae_title, entry, verify=verify)


@router.delete("/{ae_title}", status_code=204, response_class=Response, responses=_NOT_FOUND)
def remove_destination(ae_title: str, caller: Admin, settings: SettingsDep, trail: AuditTrailDep) -> Response:
    """Remove the destination with this AE title.

    Objects already in its outbox are still sent, as to an unlisted address (plain DICOM, our AE title).
    """
    delete_destination(settings, trail, caller.actor, ae_title)
    return Response(status_code=204)


@router.post("/{ae_title}/echo", response_model=EchoPublic, responses=_NOT_FOUND)
def echo_one_destination(ae_title: str, _caller: Admin, settings: SettingsDep) -> EchoPublic:
    """C-ECHO the destination now, over TLS when its entry says so (200 whether it answered or not)."""
    result = echo_destination(settings, ae_title)
    return EchoPublic(
        ae_title=result.ae_title, address=result.address, tls=result.tls, answered=result.answered, detail=result.detail
    )
