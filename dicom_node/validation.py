"""Parsing and acceptance checks shared by the Storage SCP and folder imports.

Both entry points refuse the same things, with the same words and the same
C-STORE status (PS3.4 Annex B.2.3):

* data that pydicom cannot parse: ``0xC000`` *Cannot understand*;
* a missing, empty or syntactically invalid SOP Class, SOP Instance, Study
  Instance or Series Instance UID (Type 1 in the SOP Common and General
  Study/Series modules, PS3.3 C.12.1, C.7.2.1, C.7.3.1; UID syntax per
  PS3.5 Section 9.1): ``0xA900`` *Data Set does not match SOP Class*;
* a SOP Class or SOP Instance UID in the data set that differs from the
  Affected SOP Class/Instance UID of the C-STORE request (PS3.7 9.3.1.1) or
  from the Media Storage UIDs of the file meta information (PS3.10 7.1):
  ``0xA900``.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom_node.header import InstanceHeader, summarize
from dicom_node.statuses import CANNOT_UNDERSTAND, DATASET_DOES_NOT_MATCH_SOP_CLASS

__all__ = [
    "InvalidInstance",
    "check_uid",
    "guess_transfer_syntax",
    "parse_instance",
    "validate_dataset",
]

logger = logging.getLogger(__name__)

_UID_MAX_LENGTH = 64
_UID_COMPONENT = re.compile(r"^(0|[1-9][0-9]*)$")

_PIXEL_DATA = 0x7FE00010
_UNDEFINED_LENGTH = 0xFFFFFFFF
_IDENTIFYING_GROUP = 0x0008
_IMAGE_STORAGE = "Image Storage"

_IDENTIFYING_UIDS: tuple[tuple[str, str, str], ...] = (
    ("SOPClassUID", "SOP Class UID", "(0008,0016)"),
    ("SOPInstanceUID", "SOP Instance UID", "(0008,0018)"),
    ("StudyInstanceUID", "Study Instance UID", "(0020,000D)"),
    ("SeriesInstanceUID", "Series Instance UID", "(0020,000E)"),
)


class InvalidInstance(Exception):
    """An instance that must be refused, with the reason and the C-STORE status to send.

    Parameters
    ----------
    reason : str
        A complete sentence for logs and operators, naming the attribute and
        the offending value.
    status : int
        The failure status of PS3.4 Annex B.2.3 that an SCP returns for it.

    Attributes
    ----------
    reason : str
        As given.
    status : int
        As given.
    """

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def check_uid(value: str) -> str | None:
    """Check a UID against the syntax of PS3.5 Section 9.1.

    Parameters
    ----------
    value : str
        The UID text, without trailing padding.

    Returns
    -------
    str or None
        ``None`` when the UID is valid, otherwise why it is not: longer than
        64 characters, characters other than digits and dots, an empty
        component, or a component with a leading zero.
    """
    if len(value) > _UID_MAX_LENGTH:
        return f"longer than {_UID_MAX_LENGTH} characters ({len(value)})"
    if not all(ch.isascii() and (ch.isdigit() or ch == ".") for ch in value):
        return "contains characters other than digits and dots"
    for component in value.split("."):
        if not component:
            return "has an empty component"
        if not _UID_COMPONENT.match(component):
            return f"component {component!r} has a leading zero"
    return None


def _uid_value(ds: Dataset, keyword: str, name: str, tag: str) -> str:
    """Return a UID attribute of ``ds`` or raise :class:`InvalidInstance` saying what is wrong."""
    if keyword not in ds:
        raise InvalidInstance(f"{name} {tag} is missing", DATASET_DOES_NOT_MATCH_SOP_CLASS)
    try:
        value = ds[keyword].value
    except Exception as exc:
        raise InvalidInstance(f"{name} {tag} could not be read: {exc}", DATASET_DOES_NOT_MATCH_SOP_CLASS) from exc
    if isinstance(value, MultiValue):
        shown = "\\".join(str(v) for v in value)
        raise InvalidInstance(
            f"{name} {tag} has {len(value)} values, one is required: {shown!r}",
            DATASET_DOES_NOT_MATCH_SOP_CLASS,
        )
    text = "" if value is None else str(value).rstrip("\x00 ")
    if not text:
        raise InvalidInstance(f"{name} {tag} is empty", DATASET_DOES_NOT_MATCH_SOP_CLASS)
    problem = check_uid(text)
    if problem is not None:
        raise InvalidInstance(
            f"{name} {tag} is not a valid UID (PS3.5 9.1): {text!r} {problem}",
            DATASET_DOES_NOT_MATCH_SOP_CLASS,
        )
    return text


def validate_dataset(
    ds: Dataset,
    request_sop_class_uid: str | None = None,
    request_sop_instance_uid: str | None = None,
) -> None:
    """Check that a data set can be accepted and filed.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The parsed data set.
    request_sop_class_uid : str, optional
        The Affected SOP Class UID of the C-STORE request (PS3.7 9.3.1.1), or
        the Media Storage SOP Class UID of the file meta information.
    request_sop_instance_uid : str, optional
        The Affected SOP Instance UID of the request, or the Media Storage SOP
        Instance UID of the file meta information.

    Raises
    ------
    InvalidInstance
        With status ``0xA900`` (PS3.4 Annex B.2.3) when one of SOP Class UID,
        SOP Instance UID, Study Instance UID or Series Instance UID is
        missing, empty, multi-valued or not a valid UID (PS3.5 9.1), or when
        the SOP Class/Instance UID differs from the request's.
    """
    values = {keyword: _uid_value(ds, keyword, name, tag) for keyword, name, tag in _IDENTIFYING_UIDS}
    sop_class = values["SOPClassUID"]
    if request_sop_class_uid is not None and sop_class != str(request_sop_class_uid).rstrip("\x00 "):
        raise InvalidInstance(
            f"SOP Class UID (0008,0016) {sop_class!r} differs from the request's {str(request_sop_class_uid)!r}",
            DATASET_DOES_NOT_MATCH_SOP_CLASS,
        )
    sop_instance = values["SOPInstanceUID"]
    if request_sop_instance_uid is not None and sop_instance != str(request_sop_instance_uid).rstrip("\x00 "):
        raise InvalidInstance(
            f"SOP Instance UID (0008,0018) {sop_instance!r} differs from the request's "
            f"{str(request_sop_instance_uid)!r}",
            DATASET_DOES_NOT_MATCH_SOP_CLASS,
        )


def _read(data: bytes | Path) -> Dataset:
    """Parse a Part 10 file or a bare data set with pydicom, without decoding pixel data."""
    source: io.BytesIO | str
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else str(data)
    try:
        ds = dcmread(source, force=True)
    except Exception as exc:
        raise InvalidInstance(f"pydicom could not parse the data set: {exc}", CANNOT_UNDERSTAND) from exc
    if len(ds) == 0:
        raise InvalidInstance(
            "pydicom could not parse the data set: no data elements (empty or truncated stream)",
            CANNOT_UNDERSTAND,
        )
    # Every composite IOD has group 0008 (SOP Common, PS3.3 C.12.1); garbage read with
    # force=True yields a few elements with arbitrary tags instead. keys() avoids
    # converting the elements, which iterating the Dataset would do.
    tags = ds.keys()
    if not any(elem_tag.group == _IDENTIFYING_GROUP for elem_tag in tags):
        raise InvalidInstance(
            "pydicom could not parse the data set: no DICOM data elements of group 0008 found",
            CANNOT_UNDERSTAND,
        )
    _check_pixel_data(ds)
    return ds


def _check_pixel_data(ds: Dataset) -> None:
    """Refuse image data sets whose Pixel Data (7FE0,0010) is missing or truncated.

    pydicom stops quietly at the end of a truncated stream, so a cut-off
    transfer would otherwise look like a smaller, valid data set. Native
    (uncompressed) pixel data must hold Rows x Columns x Samples per Pixel x
    Bits Allocated x Number of Frames bits (PS3.5 8.1.1, PS3.3 C.7.6.3);
    encapsulated pixel data (PS3.5 A.4) must be present whenever Rows and
    Columns are. Every image storage SOP class (PS3.4 B.5: Rows, Columns and Pixel Data are Type 1
    in its Image Pixel module, PS3.3 C.7.6.3) must have them: a cut-off stream that ends before
    Rows would otherwise pass as an image without pixels.
    """
    if not ("Rows" in ds and "Columns" in ds):
        sop_class = _image_storage_class(ds)
        if sop_class is not None:
            raise InvalidInstance(
                f"pydicom could not parse the data set: a {sop_class} instance without Rows (0028,0010), "
                "Columns (0028,0011) or Pixel Data (7FE0,0010): missing or truncated",
                CANNOT_UNDERSTAND,
            )
        return
    if any(keyword in ds for keyword in ("FloatPixelData", "DoubleFloatPixelData")):
        return
    raw = ds.get_item(_PIXEL_DATA)
    if raw is None:
        raise InvalidInstance(
            "pydicom could not parse the data set: Pixel Data (7FE0,0010) is missing or truncated",
            CANNOT_UNDERSTAND,
        )
    length = getattr(raw, "length", None)
    if length is None or length == _UNDEFINED_LENGTH:
        return
    try:
        bits = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
        bits *= int(ds.BitsAllocated) * int(ds.get("NumberOfFrames", 1) or 1)
    except Exception:  # noqa: BLE001 - malformed image attributes: nothing to compare against
        return
    expected = (bits + 7) // 8
    received = len(raw.value) if raw.value is not None else 0
    if received < expected:
        raise InvalidInstance(
            f"pydicom could not parse the data set: Pixel Data (7FE0,0010) is truncated, "
            f"{received} of {expected} bytes",
            CANNOT_UNDERSTAND,
        )


def _image_storage_class(ds: Dataset) -> str | None:
    """The name of the data set's SOP class when it is an image storage class, else ``None``."""
    try:
        name = UID(str(ds.get("SOPClassUID", "") or "").rstrip("\x00 ")).name
    except Exception:  # noqa: BLE001 - a malformed SOP Class UID is reported by validate_dataset
        return None
    return name if _IMAGE_STORAGE in name else None


def parse_instance(data: bytes | Path) -> tuple[Dataset, InstanceHeader]:
    """Parse one instance and summarise it, without decoding its pixels.

    Parameters
    ----------
    data : bytes or pathlib.Path
        A DICOM Part 10 stream (preamble, ``DICM``, file meta information,
        PS3.10 7.1) or a bare data set in implicit/explicit VR little endian,
        either in memory or in a file.

    Returns
    -------
    tuple of (pydicom.dataset.Dataset, InstanceHeader)
        The data set (its ``file_meta`` set when present in the stream) and
        its summary.

    Raises
    ------
    InvalidInstance
        Status ``0xC000`` *Cannot understand* (PS3.4 Annex B.2.3) with the
        reason ``"pydicom could not parse the data set: ..."``.
    """
    ds = _read(data)
    meta = getattr(ds, "file_meta", None)
    transfer_syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if transfer_syntax is None:
        transfer_syntax = guess_transfer_syntax(ds)
    return ds, summarize(ds, str(transfer_syntax) if transfer_syntax else None)


def guess_transfer_syntax(ds: Dataset) -> str | None:
    """Name the uncompressed transfer syntax pydicom read a data set with (PS3.5 A.1 to A.3).

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        A data set read by pydicom, typically without file meta information.

    Returns
    -------
    str or None
        Implicit VR Little Endian, Explicit VR Little Endian or Explicit VR Big
        Endian, from the encoding pydicom detected; ``None`` if unknown.
    """
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        return None
    if implicit:
        return str(ImplicitVRLittleEndian)
    return str(ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
