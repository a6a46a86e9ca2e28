"""Where reports go: the destinations of the settings, or the admin's edited list.

The settings (``LUNGCDS_DESTINATIONS``, ``LUNGCDS_DESTINATION_OUTPUTS``,
``LUNGCDS_DICOM_TLS_DESTINATIONS``) give the initial list.  Admins change it over REST
(``PUT /api/v1/destinations``); the validated list is written to ``DATA_DIR/destinations.json``
and from then on wins over the settings, in every process (workers read it for each job).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dicom_node.scu import Destination, parse_destination
from server.core.config import OUTPUT_KINDS, Settings

__all__ = ["DestinationEntry", "DestinationList", "load_destinations", "save_destinations", "destinations_file"]


class DestinationEntry(BaseModel):
    """One destination: its address, the outputs it receives, and whether it is reached over TLS."""

    model_config = ConfigDict(extra="forbid")

    address: str = Field(description="AET@host:port")
    outputs: list[str] = Field(default_factory=lambda: list(OUTPUT_KINDS))
    tls: bool = False
    calling_aet: str | None = Field(
        None, max_length=16, description="The calling AE title this destination expects from us (default ours)"
    )

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        return str(parse_destination(value))

    @field_validator("calling_aet")
    @classmethod
    def _valid_title(cls, value: str | None) -> str | None:
        if value is not None:
            Destination(value, "localhost", 104)  # raises ValueError for an invalid AE title
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
    """Every destination, each address once."""

    model_config = ConfigDict(extra="forbid")

    destinations: list[DestinationEntry]

    @model_validator(mode="after")
    def _unique(self) -> DestinationList:
        addresses = [entry.address for entry in self.destinations]
        if len(addresses) != len(set(addresses)):
            raise ValueError("a destination is listed twice")
        return self


def destinations_file(settings: Settings) -> Path:
    """The admin's list, when it exists."""
    return settings.data_dir / "destinations.json"


def load_destinations(settings: Settings) -> DestinationList:
    """The destinations in force: the admin's file when present, else the settings."""
    path = destinations_file(settings)
    if path.is_file():
        return DestinationList.model_validate_json(path.read_text(encoding="utf-8"))
    return DestinationList(
        destinations=[
            DestinationEntry(
                address=text,
                outputs=list(settings.outputs_for(text)),
                tls=parse_destination(text).ae_title in settings.dicom_tls_destinations,
                calling_aet=None,
            )
            for text in settings.destinations
        ]
    )


def save_destinations(settings: Settings, destinations: DestinationList) -> None:
    """Write the admin's list atomically; refuses TLS entries when no CA is configured."""
    if any(entry.tls for entry in destinations.destinations) and settings.dicom_tls_ca is None:
        raise ValueError("TLS destinations need LUNGCDS_DICOM_TLS_CA to verify them")
    path = destinations_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(destinations.model_dump(), indent=2), encoding="utf-8")
    os.replace(tmp, path)
