"""Report destinations: listed for viewers, replaced by admins (validated, optionally C-ECHOed, read back)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query
from pydantic import ValidationError

from dicom_node.scu import echo
from server.api.deps import Admin, AuditTrailDep, JsonObject, SettingsDep, Viewer, json_request_body
from server.api.problems import Problem
from server.core.tls import with_tls
from server.routing.destinations import (
    DestinationList,
    DestinationsInForce,
    destinations_in_force,
    save_destinations,
)

router = APIRouter(prefix="/destinations", tags=["destinations"])


class DestinationsPublic(DestinationList):
    """The destinations in force, where they come from and, when the admin's file is broken, why.

    ``source`` and ``error`` are read-only: ``PUT /destinations`` ignores them, so that a
    listing can be edited and sent back.
    """

    source: Literal["file", "last good copy", "settings"]
    error: str | None


_READ_ONLY = frozenset(set(DestinationsPublic.model_fields) - set(DestinationList.model_fields))


def _public(in_force: DestinationsInForce) -> DestinationsPublic:
    return DestinationsPublic(
        destinations=in_force.destinations.destinations, source=in_force.source, error=in_force.error
    )


@router.get("", response_model=DestinationsPublic)
def get_destinations(_caller: Viewer, settings: SettingsDep, trail: AuditTrailDep) -> DestinationsPublic:
    """The destinations in force (and why the destinations file is not, when it is broken)."""
    return _public(destinations_in_force(settings, trail))


@router.put("", response_model=DestinationsPublic, openapi_extra=json_request_body(DestinationList))
def put_destinations(
    _caller: Admin,
    settings: SettingsDep,
    body: JsonObject,
    verify: bool = Query(False, description="C-ECHO every destination before accepting the list"),
) -> DestinationsPublic:
    """Replace the destination list; nothing changes unless every entry is valid (and answers, with verify)."""
    try:
        destinations = DestinationList.model_validate({k: v for k, v in body.items() if k not in _READ_ONLY})
    except ValidationError as exc:
        raise Problem(422, "Invalid destinations", str(exc)) from exc
    if verify:
        silent = []
        for entry in destinations.destinations:
            target = with_tls(settings, entry.destination()) if entry.tls else entry.destination()
            if not echo(target, settings.ae_title, timeout=5.0):
                silent.append(entry.address)
        if silent:
            raise Problem(422, "Destinations do not answer", f"no C-ECHO answer from {', '.join(silent)}")
    try:
        save_destinations(settings, destinations)
    except ValueError as exc:
        raise Problem(422, "Invalid destinations", str(exc)) from exc
    return _public(destinations_in_force(settings))
