"""Where reports go: the destinations of the settings, or the admin's edited list.

The settings (``LUNGCDS_DESTINATIONS``, ``LUNGCDS_DESTINATION_OUTPUTS``,
``LUNGCDS_DICOM_TLS_DESTINATIONS``) give the initial list.  Admins change it over REST, whole
(``PUT /api/v1/destinations``) or one entry at a time by AE title
(:mod:`server.services.configuration`); the validated list is written to
``DATA_DIR/destinations.json`` and from then on wins over the settings, in every process
(workers read it for each job).

That file is an :class:`~server.core.admin_file.AdminFile`: written atomically and read back
before it takes effect; when it is broken (edited badly by hand, truncated) the last good list
stays in force, and the error is audited and shown by ``GET /destinations`` and
``/health/ready``, so reports keep going out.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dicom_node.scu import Destination, parse_destination
from server.core.admin_file import AdminFile, refuse_control_characters
from server.core.config import OUTPUT_KINDS, Settings

if TYPE_CHECKING:
    from server.audit import AuditTrail

__all__ = [
    "DestinationEntry",
    "DestinationList",
    "DestinationsInForce",
    "destinations_file",
    "destinations_in_force",
    "load_destinations",
    "save_destinations",
]


class DestinationEntry(BaseModel):
    """One destination: its address, the outputs it receives, whether it is reached over TLS and
    whether it takes compressed objects (the JPEG 2000 SEGs) only decoded."""

    model_config = ConfigDict(extra="forbid")

    address: str = Field(description="AET@host:port")
    outputs: list[str] = Field(default_factory=lambda: list(OUTPUT_KINDS))
    tls: bool = False
    calling_aet: str | None = Field(
        None, max_length=16, description="The calling AE title this destination expects from us (default ours)"
    )
    uncompressed: bool = Field(
        False,
        description="Send the SEGs decoded (Explicit VR Little Endian) although the destination accepts JPEG 2000: "
        "for archives whose viewers cannot decode it (OHIF's SEG loader)",
    )

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        return str(parse_destination(refuse_control_characters(value)))

    @field_validator("calling_aet")
    @classmethod
    def _valid_title(cls, value: str | None) -> str | None:
        if value is not None:
            Destination(refuse_control_characters(value), "localhost", 104)  # ValueError for an invalid AE title
        return value

    @field_validator("outputs")
    @classmethod
    def _known_outputs(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(OUTPUT_KINDS))
        if unknown:
            raise ValueError(f"unknown outputs {unknown}; use {list(OUTPUT_KINDS)}")
        if not value:
            raise ValueError("a destination must receive at least one output")
        return value

    @property
    def ae_title(self) -> str:
        """The destination's AE title."""
        return parse_destination(self.address).ae_title

    def destination(self) -> Destination:
        """The address as a :class:`Destination` (without TLS; see :func:`server.core.tls.destination`)."""
        return parse_destination(self.address)


class DestinationList(BaseModel):
    """Every destination, each address and each AE title once.

    The AE title names a destination: the settings give its outputs and TLS per AE title, and
    the REST API addresses one entry as ``/destinations/{ae_title}``.
    """

    model_config = ConfigDict(extra="forbid")

    destinations: list[DestinationEntry]

    @model_validator(mode="after")
    def _unique(self) -> DestinationList:
        addresses = [entry.address for entry in self.destinations]
        if len(addresses) != len(set(addresses)):
            raise ValueError("a destination is listed twice")
        titles = Counter(entry.ae_title for entry in self.destinations)
        for title in sorted(t for t, n in titles.items() if n > 1):
            listed = ", ".join(e.address for e in self.destinations if e.ae_title == title)
            raise ValueError(f"AE title {title} is listed more than once ({listed}); each destination needs its own")
        return self

    def find(self, ae_title: str) -> DestinationEntry | None:
        """The entry with AE title ``ae_title`` (compared as DICOM does: without surrounding spaces)."""
        wanted = ae_title.strip()
        return next((entry for entry in self.destinations if entry.ae_title == wanted), None)


@dataclass(frozen=True)
class DestinationsInForce:
    """The destinations that apply, where they come from, and why the admin's file is not them.

    ``source`` is ``"file"`` (the admin's list), ``"last good copy"`` (the file is broken:
    ``error`` says how) or ``"settings"`` (no file, or no valid version of it ever).
    """

    destinations: DestinationList
    source: Literal["file", "last good copy", "settings"]
    error: str | None


def destinations_file(settings: Settings) -> Path:
    """The admin's list, when it exists."""
    return settings.data_dir / "destinations.json"


def _admin_file(settings: Settings) -> AdminFile[DestinationList]:
    return AdminFile(destinations_file(settings), DestinationList.model_validate_json)


def destinations_in_force(settings: Settings, audit: AuditTrail | None = None) -> DestinationsInForce:
    """The admin's list (or its last good copy) when there is one, else the settings' destinations.

    Never raises for a broken file: the last good list stays in force and ``error`` says why;
    with ``audit``, each broken version of the file is audited (once per process).
    """
    loaded = _admin_file(settings).load()
    source: Literal["file", "last good copy", "settings"]
    if loaded.value is None:
        listed, source = _from_settings(settings), "settings"
    elif loaded.source == "file":
        listed, source = loaded.value, "file"
    else:
        listed, source = loaded.value, "last good copy"
    if loaded.error is not None and audit is not None:
        fingerprint = loaded.fingerprint or loaded.error
        audit.record_rejected_file(destinations_file(settings), loaded.error, fingerprint, f"the {source}")
    return DestinationsInForce(listed, source, loaded.error)


def load_destinations(settings: Settings, audit: AuditTrail | None = None) -> DestinationList:
    """The destinations in force (:func:`destinations_in_force` without where they come from)."""
    return destinations_in_force(settings, audit).destinations


def _from_settings(settings: Settings) -> DestinationList:
    return DestinationList(
        destinations=[
            DestinationEntry(
                address=text,
                outputs=list(settings.outputs_for(text)),
                tls=parse_destination(text).ae_title in settings.dicom_tls_destinations,
                calling_aet=None,
                uncompressed=parse_destination(text).ae_title in settings.uncompressed_destinations,
            )
            for text in settings.destinations
        ]
    )


def save_destinations(settings: Settings, destinations: DestinationList) -> None:
    """Write the admin's list atomically, only if it reads back as ``destinations``.

    Raises ``ValueError`` (nothing written) for TLS entries when no CA is configured.
    """
    if any(entry.tls for entry in destinations.destinations) and settings.dicom_tls_ca is None:
        raise ValueError("TLS destinations need LUNGCDS_DICOM_TLS_CA to verify them")
    content = json.dumps(destinations.model_dump(), indent=2).encode("utf-8")
    _admin_file(settings).save(content, destinations)
