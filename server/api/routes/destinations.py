"""Report destinations: listed for viewers, replaced by admins (validated, optionally C-ECHOed)."""

from __future__ import annotations

from fastapi import APIRouter, Query
from pydantic import ValidationError

from dicom_node.scu import echo
from server.api.deps import Admin, SettingsDep, Viewer
from server.api.problems import Problem
from server.core.tls import with_tls
from server.routing.destinations import DestinationList, load_destinations, save_destinations

router = APIRouter(prefix="/destinations", tags=["destinations"])


@router.get("", response_model=DestinationList)
def get_destinations(settings: SettingsDep, _caller: Viewer) -> DestinationList:
    """The destinations in force."""
    return load_destinations(settings)


@router.put("", response_model=DestinationList)
def put_destinations(
    body: dict[str, object],
    settings: SettingsDep,
    _caller: Admin,
    verify: bool = Query(False, description="C-ECHO every destination before accepting the list"),
) -> DestinationList:
    """Replace the destination list; nothing changes unless every entry is valid (and answers, with verify)."""
    try:
        destinations = DestinationList.model_validate(body)
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
    return destinations
