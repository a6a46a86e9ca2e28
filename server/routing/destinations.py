"""Where reports go: the destinations of the settings, or the admin's edited list.

A destination is one of three kinds, told apart by its address (:func:`parse_address`):

* ``AET@host:port``: a DICOM peer, sent C-STORE (PS3.4 Annex B);
* ``NAME@stow+https://host/base`` (or ``stow+http``): a DICOMweb origin server, sent STOW-RS
  (PS3.18 10.5) to ``https://host/base/studies``, with the credential
  ``LUNGCDS_DICOMWEB_CREDENTIALS[NAME]`` when there is one;
* ``NAME@return-to-sender``: whoever sent the series, looked up by its origin (the calling AE
  title, or the STOW-RS sender) in ``LUNGCDS_SENDER_ADDRESSES`` when each object is sent
  (:func:`sender_address`); an origin not listed gets nothing, and the delivery is refused
  with that reason.

The part before ``@`` names every destination (for a DICOM peer it is its AE title): the
settings give outputs per name, and the REST API addresses one entry as ``/destinations/{name}``.

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
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dicom_node.scu import Destination, parse_destination
from server.core.admin_file import AdminFile, refuse_control_characters
from server.core.config import OUTPUT_KINDS, Settings
from server.core.tls import with_tls

if TYPE_CHECKING:
    from server.audit import AuditTrail

__all__ = [
    "RETURN_TO_SENDER",
    "Address",
    "DestinationEntry",
    "DestinationList",
    "DestinationsInForce",
    "commitment_requester",
    "destinations_file",
    "destinations_in_force",
    "load_destinations",
    "parse_address",
    "save_destinations",
    "sender_address",
]

#: The address (after ``NAME@``) of the destination that is whoever sent the series.
RETURN_TO_SENDER = "return-to-sender"
#: Address schemes of STOW-RS destinations and the scheme of the DICOMweb base URL each stands for.
_STOW_SCHEMES = {"stow+http": "http", "stow+https": "https"}

DestinationKind = Literal["dicom", "stow-rs", "return-to-sender"]


@dataclass(frozen=True)
class Address:
    """A parsed destination address.

    Attributes
    ----------
    kind : str
        ``dicom``, ``stow-rs`` or ``return-to-sender``.
    name : str
        What names the destination: the AE title of a DICOM peer, else the part before ``@``.
    dicom : dicom_node.scu.Destination or None
        The DICOM peer (kind ``dicom``).
    url : str or None
        The DICOMweb base URL, without a trailing slash (kind ``stow-rs``).
    """

    kind: DestinationKind
    name: str
    dicom: Destination | None = None
    url: str | None = None

    def __str__(self) -> str:
        if self.dicom is not None:
            return str(self.dicom)
        if self.url is not None:
            return f"{self.name}@stow+{self.url}"
        return f"{self.name}@{RETURN_TO_SENDER}"


def parse_address(text: str) -> Address:
    """Parse ``AET@host:port``, ``NAME@stow+http(s)://host[:port]/base`` or ``NAME@return-to-sender``.

    Raises
    ------
    ValueError
        Naming what is wrong: as :func:`dicom_node.scu.parse_destination` for a DICOM address; an
        invalid name (the rules of an AE title, PS3.5 6.2); a STOW-RS URL without a host, with a
        user or password (credentials go in ``LUNGCDS_DICOMWEB_CREDENTIALS``, never in an address
        that is listed and logged), a query or a fragment, or a bad port.
    """
    stripped = text.strip()
    name, _, rest = stripped.partition("@")
    scheme = rest.partition("://")[0]
    if rest != RETURN_TO_SENDER and scheme not in _STOW_SCHEMES:
        return Address("dicom", (dicom := parse_destination(stripped)).ae_title, dicom=dicom)
    try:
        Destination(name, "localhost", 104)
    except ValueError as exc:
        raise ValueError(f"destination {text!r}: the name before '@' follows the rules of an AE title: {exc}") from exc
    if rest == RETURN_TO_SENDER:
        return Address("return-to-sender", name)
    url = _STOW_SCHEMES[scheme] + rest[len(scheme) :]
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0..65535
    except ValueError as exc:
        raise ValueError(f"destination {text!r}: {exc}") from exc
    if "@" in parts.netloc:
        raise ValueError(
            f"destination {name}: no user or password in the address; use LUNGCDS_DICOMWEB_CREDENTIALS[{name!r}]"
        )
    if not parts.hostname:
        raise ValueError(f"destination {text!r} has no host")
    if parts.query or parts.fragment:
        raise ValueError(f"destination {text!r}: a DICOMweb base URL has no query or fragment")
    return Address("stow-rs", name, url=url.rstrip("/"))


def sender_address(settings: Settings, origin: str | None) -> Address | None:
    """Where ``origin`` (the calling AE title or STOW-RS sender of a series) is reached; None when not listed."""
    if origin is None:
        return None
    address = settings.sender_addresses.get(origin.strip())
    return parse_address(address) if address is not None else None


def commitment_requester(settings: Settings, calling_aet: str) -> Destination | None:
    """Where a Storage Commitment requester takes its result on a new association (PS3.4 J.3.3.1).

    Its calling AE title's entry in ``LUNGCDS_SENDER_ADDRESSES``, the address return-to-sender
    uses too, reached over TLS when that address's AE title is in ``LUNGCDS_DICOM_TLS_DESTINATIONS``;
    None when it is not listed or is a STOW-RS sender (which cannot take an N-EVENT-REPORT).
    """
    found = sender_address(settings, calling_aet)
    if found is None or found.dicom is None:
        return None
    peer = found.dicom
    return with_tls(settings, peer) if peer.ae_title in settings.dicom_tls_destinations else peer


class DestinationEntry(BaseModel):
    """One destination: its address, the outputs it receives, whether it is reached over TLS and
    whether it takes compressed objects (the JPEG 2000 SEGs) only decoded.

    ``tls`` and ``calling_aet`` are for DICOM peers (a return-to-sender entry applies them to the
    DICOM peer it finds); a STOW-RS destination is reached over HTTPS by its ``stow+https`` URL.
    """

    model_config = ConfigDict(extra="forbid")

    address: str = Field(description="AET@host:port, NAME@stow+https://host/dicomweb-base or NAME@return-to-sender")
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
        return str(parse_address(refuse_control_characters(value)))

    @model_validator(mode="after")
    def _dicom_options_for_dicom_peers(self) -> DestinationEntry:
        if self.kind == "stow-rs" and (self.tls or self.calling_aet is not None):
            raise ValueError("tls and calling_aet are for DICOM peers; a STOW-RS destination uses a stow+https address")
        return self

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
        """The destination's name: the AE title of a DICOM peer, else the part of its address before ``@``."""
        return parse_address(self.address).name

    @property
    def kind(self) -> DestinationKind:
        """``dicom``, ``stow-rs`` or ``return-to-sender``."""
        return parse_address(self.address).kind

    def destination(self) -> Destination:
        """The address as a :class:`Destination` (without TLS; see :func:`server.core.tls.destination`).

        Raises ``ValueError`` for a STOW-RS or return-to-sender entry, which has no DICOM address.
        """
        dicom = parse_address(self.address).dicom
        if dicom is None:
            raise ValueError(f"{self.address} is a {self.kind} destination, not a DICOM peer")
        return dicom


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
                tls=address.kind != "stow-rs" and address.name in settings.dicom_tls_destinations,
                calling_aet=None,
                uncompressed=address.name in settings.uncompressed_destinations,
            )
            for text, address in ((text, parse_address(text)) for text in settings.destinations)
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
