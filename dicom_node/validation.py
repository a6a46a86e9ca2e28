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
  ``0xA900``;
* an Image Pixel module (PS3.3 C.7.6.3) that no decoder can follow: Rows or
  Columns below 1, Samples per Pixel that do not fit the Photometric
  Interpretation, Bits Allocated other than 1 or a multiple of 8, Bits Stored
  above Bits Allocated, Pixel Representation other than 0 or 1, Number of
  Frames below 1, or one of them missing or not an integer: ``0xA900``, the
  data set does not conform to its IOD;
* Pixel Data (7FE0,0010) that cannot be read as its attributes and the
  transfer syntax declare (PS3.5 8.1.1, 8.2, Annex A.4): native pixel data of
  another length than Rows x Columns x Samples per Pixel x Number of Frames x
  Bits Allocated / 8, encapsulated fragments under a native transfer syntax or
  native bytes under a compressed one, fragments that do not parse, fewer
  fragments than frames, a Basic Offset Table that does not point at them, or
  a first frame whose codestream is not the declared one (JPEG SOI ``FFD8``
  and frame header, JPEG-LS SOF55 ``FFF7``, JPEG 2000 SOC ``FF4F`` and SIZ
  ``FF51`` or a JP2 file, the RLE header of PS3.5 G.5) or has other
  dimensions: ``0xC000``, the SCP cannot understand the pixels. Only headers
  are read: no frame is decoded.

Every reason starts with the attribute and its tag, then says what is wrong
and gives the values: an Error Comment (0000,0902) is cut to 64 characters
(PS3.7 C.4), the audit trail keeps the whole reason.
"""

from __future__ import annotations

import io
import logging
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    JPEG2000MC,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

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
_FLOAT_PIXEL_DATA = ("FloatPixelData", "DoubleFloatPixelData")
_UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM_TAG = 0xFFFEE000
_SEQUENCE_DELIMITER_TAG = 0xFFFEE0DD
_ITEM_HEADER = struct.Struct("<HHL")
_IDENTIFYING_GROUP = 0x0008
_IMAGE_STORAGE = "Image Storage"
_SHOWN_VALUE_LENGTH = 40
_CODESTREAM_HEADER_BYTES = 64 * 1024
"""How much of the first frame is gathered to read its codestream header (markers, SIZ, SOF)."""

_IDENTIFYING_UIDS: tuple[tuple[str, str, str], ...] = (
    ("SOPClassUID", "SOP Class UID", "(0008,0016)"),
    ("SOPInstanceUID", "SOP Instance UID", "(0008,0018)"),
    ("StudyInstanceUID", "Study Instance UID", "(0020,000D)"),
    ("SeriesInstanceUID", "Series Instance UID", "(0020,000E)"),
)

_SAMPLES_PER_PHOTOMETRIC_INTERPRETATION: dict[str, int] = {
    "MONOCHROME1": 1,
    "MONOCHROME2": 1,
    "PALETTE COLOR": 1,
    "RGB": 3,
    "HSV": 3,
    "YBR_FULL": 3,
    "YBR_FULL_422": 3,
    "YBR_PARTIAL_422": 3,
    "YBR_PARTIAL_420": 3,
    "YBR_ICT": 3,
    "YBR_RCT": 3,
    "XYB": 3,
}
"""Photometric Interpretation (0028,0004) terms a decoder renders, with Samples per Pixel (PS3.3 C.7.6.3.1.2)."""

_JPEG_SYNTAXES = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1})
"""JPEG (ISO/IEC 10918-1) transfer syntaxes, PS3.5 A.4.1."""
_JPEG_LS_SYNTAXES = frozenset({JPEGLSLossless, JPEGLSNearLossless})
"""JPEG-LS (ISO/IEC 14495-1) transfer syntaxes, PS3.5 A.4.3."""
_JPEG_2000_SYNTAXES = frozenset(
    {JPEG2000Lossless, JPEG2000, JPEG2000MCLossless, JPEG2000MC, HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K}
)
"""JPEG 2000 and High-Throughput JPEG 2000 (ISO/IEC 15444-1, -15) transfer syntaxes, PS3.5 A.4.4, A.4.11."""
_MULTI_COMPONENT_SYNTAXES = frozenset({JPEG2000MCLossless, JPEG2000MC})
"""JPEG 2000 Part 2 multi-component syntaxes (PS3.5 A.4.5): components need not equal Samples per Pixel."""

_JPEG_SOI = b"\xff\xd8"
_JPEG_SOF55 = 0xF7
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
"""SOF0 to SOF15 (ITU-T T.81 Table B.1); C4 (DHT), C8 (JPG) and CC (DAC) are not frame headers."""
_JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})
"""TEM and RST0 to RST7 have no length field (ITU-T T.81 B.1.1.3)."""
_JPEG_SCAN_OR_END_MARKERS = frozenset({0xD9, 0xDA})
"""EOI and SOS: a frame header must come before either (ITU-T T.81 B.2.1)."""
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
_J2K_SIZ_LENGTH = 42
"""Bytes from SOC to the end of Csiz in the SIZ marker segment (ISO/IEC 15444-1 A.5.1)."""
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_JP2_CODESTREAM_BOX = b"jp2c"
_RLE_HEADER = struct.Struct("<16L")
_RLE_FIRST_SEGMENT_OFFSET = 64
_RLE_MAX_SEGMENTS = 15


class InvalidInstance(Exception):
    """An instance that must be refused, with the reason and the C-STORE status to send.

    Parameters
    ----------
    reason : str
        A complete sentence for logs and operators, naming the attribute and
        the offending value.
    status : int
        The failure status of PS3.4 Annex B.2.3 that an SCP returns for it.
    detail : Mapping, optional
        What an audit trail should record beyond the reason, e.g. the patient
        identities of two conflicting instances; never logged.

    Attributes
    ----------
    reason : str
        As given.
    status : int
        As given.
    """

    def __init__(self, reason: str, status: int, *, detail: Mapping[str, object] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.detail: Mapping[str, object] = detail or {}


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
            f"{name} {tag} is not a valid UID: {text!r} {problem} (PS3.5 9.1)",
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
            f"SOP Class UID (0008,0016) differs from the request's: {sop_class!r} in the data set, "
            f"{str(request_sop_class_uid)!r} requested (PS3.7 9.3.1.1)",
            DATASET_DOES_NOT_MATCH_SOP_CLASS,
        )
    sop_instance = values["SOPInstanceUID"]
    if request_sop_instance_uid is not None and sop_instance != str(request_sop_instance_uid).rstrip("\x00 "):
        raise InvalidInstance(
            f"SOP Instance UID (0008,0018) differs from the request's: {sop_instance!r} in the data set, "
            f"{str(request_sop_instance_uid)!r} requested (PS3.7 9.3.1.1)",
            DATASET_DOES_NOT_MATCH_SOP_CLASS,
        )


def _read(data: bytes | Path) -> Dataset:
    """Parse a Part 10 file or a bare data set with pydicom, without decoding pixel data."""
    source: io.BytesIO | str
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else str(data)
    try:
        ds = dcmread(source, force=True)
    except Exception as exc:
        raise InvalidInstance(
            f"Data set is corrupt: {exc or type(exc).__name__}; pydicom could not parse it", CANNOT_UNDERSTAND
        ) from exc
    if len(ds) == 0:
        raise InvalidInstance(
            "Data set has no data elements (empty or truncated stream); pydicom could not parse it",
            CANNOT_UNDERSTAND,
        )
    # Every composite IOD has group 0008 (SOP Common, PS3.3 C.12.1); garbage read with
    # force=True yields a few elements with arbitrary tags instead. keys() avoids
    # converting the elements, which iterating the Dataset would do.
    tags = ds.keys()
    if not any(elem_tag.group == _IDENTIFYING_GROUP for elem_tag in tags):
        raise InvalidInstance(
            "Data set has no data elements of group 0008 (not DICOM); pydicom could not parse it",
            CANNOT_UNDERSTAND,
        )
    return ds


@dataclass(frozen=True)
class _ImagePixel:
    """The Image Pixel module attributes that size Pixel Data (PS3.3 C.7.6.3), checked."""

    rows: int
    columns: int
    samples_per_pixel: int
    photometric_interpretation: str
    bits_allocated: int
    number_of_frames: int

    def expected_native_length(self) -> int:
        """Bytes of native Pixel Data (PS3.5 8.1.1, PS3.3 C.7.6.3.1.2), without the padding byte.

        1-bit pixels are packed across frames; YBR_FULL_422 stores two samples per pixel.
        """
        samples = self.rows * self.columns * self.samples_per_pixel * self.number_of_frames
        if self.photometric_interpretation == "YBR_FULL_422":
            samples = samples // 3 * 2
        return (samples * self.bits_allocated + 7) // 8

    def formula(self) -> str:
        """The native length in words, for reasons."""
        return (
            f"Rows {self.rows} x Columns {self.columns} x Samples per Pixel {self.samples_per_pixel} "
            f"x Number of Frames {self.number_of_frames} x Bits Allocated {self.bits_allocated} / 8"
        )


def _shown(value: object) -> str:
    """A value for a reason: its repr, at most 40 characters."""
    text = repr(value)
    return text if len(text) <= _SHOWN_VALUE_LENGTH else text[: _SHOWN_VALUE_LENGTH - 3] + "..."


def _attribute_value(ds: Dataset, keyword: str, name: str, tag: str) -> object:
    """The single value of an Image Pixel attribute, ``None`` when absent; refuses unreadable or multiple values."""
    if keyword not in ds:
        return None
    try:
        value = ds[keyword].value
    except Exception as exc:
        raise InvalidInstance(f"{name} {tag} could not be read: {exc}", DATASET_DOES_NOT_MATCH_SOP_CLASS) from exc
    if isinstance(value, (MultiValue, list)):
        if len(value) > 1:
            raise InvalidInstance(
                f"{name} {tag} has {len(value)} values, one is required: {_shown(list(value))}",
                DATASET_DOES_NOT_MATCH_SOP_CLASS,
            )
        value = value[0] if value else None
    if value is None or value == "":
        raise InvalidInstance(f"{name} {tag} is empty", DATASET_DOES_NOT_MATCH_SOP_CLASS)
    return value


def _as_integer(value: object, name: str, tag: str) -> int:
    """The value of an integer Image Pixel attribute (US, IS, PS3.5 6.2), or the refusal of anything else."""
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise InvalidInstance(f"{name} {tag} is not an integer: {_shown(value)}", DATASET_DOES_NOT_MATCH_SOP_CLASS)


def _required_integer(ds: Dataset, keyword: str, name: str, tag: str) -> int:
    """A Type 1 integer attribute of the Image Pixel module (PS3.3 C.7.6.3)."""
    value = _attribute_value(ds, keyword, name, tag)
    if value is None:
        raise InvalidInstance(f"{name} {tag} is missing (PS3.3 C.7.6.3)", DATASET_DOES_NOT_MATCH_SOP_CLASS)
    return _as_integer(value, name, tag)


def _refuse_attribute(name: str, tag: str, value: int | str, rule: str) -> InvalidInstance:
    """The ``0xA900`` refusal of an Image Pixel attribute outside its defined values."""
    return InvalidInstance(f"{name} {tag} is {value}; {rule}", DATASET_DOES_NOT_MATCH_SOP_CLASS)


def _image_pixel(ds: Dataset) -> _ImagePixel:
    """Read and check the Image Pixel module of a data set with Pixel Data (PS3.3 C.7.6.3, PS3.5 8.1.1)."""
    rows = _required_integer(ds, "Rows", "Rows", "(0028,0010)")
    if rows < 1:
        raise _refuse_attribute("Rows", "(0028,0010)", rows, "must be at least 1 (PS3.3 C.7.6.3)")
    columns = _required_integer(ds, "Columns", "Columns", "(0028,0011)")
    if columns < 1:
        raise _refuse_attribute("Columns", "(0028,0011)", columns, "must be at least 1 (PS3.3 C.7.6.3)")
    samples = _required_integer(ds, "SamplesPerPixel", "Samples per Pixel", "(0028,0002)")
    photometric = _attribute_value(ds, "PhotometricInterpretation", "Photometric Interpretation", "(0028,0004)")
    if photometric is None:
        raise InvalidInstance(
            "Photometric Interpretation (0028,0004) is missing (PS3.3 C.7.6.3)", DATASET_DOES_NOT_MATCH_SOP_CLASS
        )
    interpretation = str(photometric).strip()
    expected_samples = _SAMPLES_PER_PHOTOMETRIC_INTERPRETATION.get(interpretation)
    if expected_samples is None:
        raise _refuse_attribute(
            "Photometric Interpretation",
            "(0028,0004)",
            _shown(interpretation),
            "not a term a decoder can render (PS3.3 C.7.6.3.1.2)",
        )
    if samples != expected_samples:
        raise _refuse_attribute(
            "Samples per Pixel",
            "(0028,0002)",
            samples,
            f"Photometric Interpretation {interpretation} has {expected_samples} (PS3.3 C.7.6.3.1.1)",
        )
    if samples > 1:
        planar = _required_integer(ds, "PlanarConfiguration", "Planar Configuration", "(0028,0006)")
        if planar not in (0, 1):
            raise _refuse_attribute("Planar Configuration", "(0028,0006)", planar, "must be 0 or 1 (PS3.3 C.7.6.3.1.3)")
    bits_allocated = _required_integer(ds, "BitsAllocated", "Bits Allocated", "(0028,0100)")
    if not (bits_allocated == 1 or (bits_allocated % 8 == 0 and 8 <= bits_allocated <= 64)):
        raise _refuse_attribute(
            "Bits Allocated", "(0028,0100)", bits_allocated, "must be 1 or a multiple of 8 up to 64 (PS3.5 8.1.1)"
        )
    bits_stored = _required_integer(ds, "BitsStored", "Bits Stored", "(0028,0101)")
    if not 1 <= bits_stored <= bits_allocated:
        raise _refuse_attribute(
            "Bits Stored",
            "(0028,0101)",
            bits_stored,
            f"must be 1 to Bits Allocated {bits_allocated} (PS3.5 8.1.1)",
        )
    representation = _required_integer(ds, "PixelRepresentation", "Pixel Representation", "(0028,0103)")
    if representation not in (0, 1):
        raise _refuse_attribute(
            "Pixel Representation", "(0028,0103)", representation, "must be 0 or 1 (PS3.3 C.7.6.3.1)"
        )
    value = _attribute_value(ds, "NumberOfFrames", "Number of Frames", "(0028,0008)")
    frames = 1 if value is None else _as_integer(value, "Number of Frames", "(0028,0008)")
    if frames < 1:
        raise _refuse_attribute("Number of Frames", "(0028,0008)", frames, "must be at least 1 (PS3.3 C.7.6.6)")
    return _ImagePixel(rows, columns, samples, interpretation, bits_allocated, frames)


def _check_pixel_data(ds: Dataset, transfer_syntax: str | None) -> None:
    """Refuse image data sets whose Pixel Data (7FE0,0010) cannot be decoded as declared.

    pydicom stops quietly at the end of a truncated stream, so a cut-off
    transfer would otherwise look like a smaller, valid data set. Every image
    storage SOP class (PS3.4 B.5: Rows, Columns and Pixel Data are Type 1 in
    its Image Pixel module, PS3.3 C.7.6.3) must have them, and Pixel Data
    must be present whenever Rows and Columns are. When Pixel Data is present,
    the Image Pixel module is checked (``0xA900``) and then the pixel data
    against it and ``transfer_syntax`` (``0xC000``): native data by its length
    (PS3.5 8.1.1), encapsulated data by its items and the header of its first
    frame (PS3.5 A.4). ``transfer_syntax`` is ``None`` for a data set without
    file meta information, whose encoding is only guessed: then only the items
    are checked. Float and Double Float Pixel Data (PS3.3 C.7.6.3) are not
    checked.
    """
    pixel_data = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    if any(keyword in ds for keyword in _FLOAT_PIXEL_DATA):
        return
    if pixel_data is None:
        if "Rows" in ds and "Columns" in ds:
            raise InvalidInstance(
                "Pixel Data (7FE0,0010) is missing; the stream may be truncated (PS3.3 C.7.6.3)", CANNOT_UNDERSTAND
            )
        sop_class = _image_storage_class(ds)
        if sop_class is not None:
            missing = next(
                name
                for keyword, name in (
                    ("Rows", "Rows (0028,0010)"),
                    ("Columns", "Columns (0028,0011)"),
                    ("PixelData", "Pixel Data (7FE0,0010)"),
                )
                if keyword not in ds
            )
            raise InvalidInstance(
                f"{missing} is missing; a {sop_class} instance has Rows, Columns and Pixel Data "
                "(PS3.3 C.7.6.3): the stream may be truncated",
                CANNOT_UNDERSTAND,
            )
        return
    image = _image_pixel(ds)
    value = pixel_data.value if isinstance(pixel_data, (DataElement, RawDataElement)) else None
    # Native data is only measured: no copy of the (large) value unless its items must be read.
    data = value if isinstance(value, (bytes, bytearray, memoryview)) else b""
    encapsulated = getattr(pixel_data, "length", None) == _UNDEFINED_LENGTH or bool(
        getattr(pixel_data, "is_undefined_length", False)
    )
    expects_encapsulated = _expects_encapsulation(transfer_syntax)
    if expects_encapsulated is False and encapsulated:
        raise InvalidInstance(
            f"Pixel Data (7FE0,0010) is encapsulated, the transfer syntax is native: "
            f"{_syntax_name(transfer_syntax)} has no fragments (PS3.5 A.4)",
            CANNOT_UNDERSTAND,
        )
    if expects_encapsulated and not encapsulated:
        raise InvalidInstance(
            f"Pixel Data (7FE0,0010) is not encapsulated: {_syntax_name(transfer_syntax)} needs fragments, "
            f"got {len(data)} native bytes (PS3.5 A.4)",
            CANNOT_UNDERSTAND,
        )
    if encapsulated:
        _check_encapsulated(bytes(data), image, transfer_syntax)
    else:
        _check_native_length(len(data), image)


def _expects_encapsulation(transfer_syntax: str | None) -> bool | None:
    """Whether a transfer syntax encapsulates Pixel Data (PS3.5 A.4); ``None`` when unknown or private."""
    if transfer_syntax is None:
        return None
    try:
        return bool(UID(transfer_syntax).is_encapsulated)
    except ValueError:
        return None


def _syntax_name(transfer_syntax: str | None) -> str:
    """A transfer syntax in words, with its UID."""
    if transfer_syntax is None:
        return "an unknown transfer syntax"
    name = UID(transfer_syntax).name
    return f"{name} ({transfer_syntax})" if name != transfer_syntax else transfer_syntax


def _check_native_length(received: int, image: _ImagePixel) -> None:
    """Native Pixel Data holds exactly the declared pixels, plus one padding byte when odd (PS3.5 8.1.1, 7.1.1)."""
    expected = image.expected_native_length()
    if received == expected or (expected % 2 == 1 and received == expected + 1):
        return
    if received < expected:
        raise InvalidInstance(
            f"Pixel Data (7FE0,0010) is truncated: {received} of {expected} bytes; {image.formula()} (PS3.5 8.1.1)",
            CANNOT_UNDERSTAND,
        )
    raise InvalidInstance(
        f"Pixel Data (7FE0,0010) is too long: {received} bytes, {expected} expected; {image.formula()} (PS3.5 8.1.1)",
        CANNOT_UNDERSTAND,
    )


def _items(data: bytes) -> list[tuple[int, int]]:
    """Offsets and lengths of the values of the items of encapsulated Pixel Data (PS3.5 A.4, Table A.4-1).

    The first item is the Basic Offset Table; the sequence delimiter, when
    pydicom kept it, ends the list.
    """
    items: list[tuple[int, int]] = []
    position = 0
    while position < len(data):
        if position + _ITEM_HEADER.size > len(data):
            raise InvalidInstance(
                f"Pixel Data (7FE0,0010) items end in a cut item header at byte {position} (PS3.5 A.4)",
                CANNOT_UNDERSTAND,
            )
        group, element, length = _ITEM_HEADER.unpack_from(data, position)
        tag = group << 16 | element
        if tag == _SEQUENCE_DELIMITER_TAG:
            break
        if tag != _ITEM_TAG:
            raise InvalidInstance(
                f"Pixel Data (7FE0,0010) has tag ({group:04X},{element:04X}) where an item (FFFE,E000) "
                f"belongs, at byte {position} (PS3.5 A.4)",
                CANNOT_UNDERSTAND,
            )
        start = position + _ITEM_HEADER.size
        if length == _UNDEFINED_LENGTH or start + length > len(data):
            left = len(data) - start
            raise InvalidInstance(
                f"Pixel Data (7FE0,0010) item at byte {position} is cut: "
                f"{'undefined length' if length == _UNDEFINED_LENGTH else f'{length} bytes'}, {left} left (PS3.5 A.4)",
                CANNOT_UNDERSTAND,
            )
        items.append((start, length))
        position = start + length
    return items


def _check_encapsulated(data: bytes, image: _ImagePixel, transfer_syntax: str | None) -> None:
    """Check the items of encapsulated Pixel Data and the codestream header of the first frame (PS3.5 A.4)."""
    items = _items(data)
    if not items:
        raise InvalidInstance(
            "Pixel Data (7FE0,0010) has no items, not even the Basic Offset Table (PS3.5 A.4)", CANNOT_UNDERSTAND
        )
    (table_start, table_length), fragments = items[0], items[1:]
    frames = image.number_of_frames
    if not fragments:
        raise InvalidInstance("Pixel Data (7FE0,0010) has no fragments (PS3.5 A.4)", CANNOT_UNDERSTAND)
    if len(fragments) < frames:
        raise InvalidInstance(
            f"Pixel Data (7FE0,0010) has {len(fragments)} fragments for {frames} frames; a frame needs one at least "
            "(PS3.5 A.4)",
            CANNOT_UNDERSTAND,
        )
    if table_length % 4:
        raise InvalidInstance(
            f"Pixel Data (7FE0,0010) Basic Offset Table has {table_length} bytes, not a multiple of 4 (PS3.5 A.4)",
            CANNOT_UNDERSTAND,
        )
    offsets = struct.unpack_from(f"<{table_length // 4}L", data, table_start)
    first_item = table_start + table_length
    starts = [start - _ITEM_HEADER.size - first_item for start, _ in fragments]
    if offsets and (len(offsets) != frames or not set(offsets) <= set(starts)):
        raise InvalidInstance(
            f"Pixel Data (7FE0,0010) Basic Offset Table does not point at its {frames} frames: "
            f"{len(offsets)} offsets, {_shown(list(offsets))} (PS3.5 A.4)",
            CANNOT_UNDERSTAND,
        )
    if transfer_syntax is None:
        return
    frame_end = offsets[1] if len(offsets) > 1 else None
    header = bytearray()
    for (start, length), relative in zip(fragments, starts, strict=True):
        if (frame_end is not None and relative >= frame_end) or len(header) >= _CODESTREAM_HEADER_BYTES:
            break
        header += data[start : start + min(length, _CODESTREAM_HEADER_BYTES)]
    _check_codestream(bytes(header), image, UID(transfer_syntax))


def _check_codestream(header: bytes, image: _ImagePixel, transfer_syntax: UID) -> None:
    """Check that the first frame is the declared codestream, of the declared size (PS3.5 A.4.1 to A.4.4, G.5)."""
    if transfer_syntax in _JPEG_SYNTAXES or transfer_syntax in _JPEG_LS_SYNTAXES:
        jpeg_ls = transfer_syntax in _JPEG_LS_SYNTAXES
        family = "JPEG-LS" if jpeg_ls else "JPEG"
        frame = _jpeg_frame_header(header)
        if isinstance(frame, str):
            raise _not_the_codestream(family, frame, transfer_syntax)
        marker, height, width, components = frame
        if jpeg_ls != (marker == _JPEG_SOF55):
            found = "SOF55 FFF7 (JPEG-LS)" if marker == _JPEG_SOF55 else f"SOF FF{marker:02X} (JPEG)"
            raise _not_the_codestream(family, f"its frame header is {found}", transfer_syntax)
        _check_dimensions(family, image, width, height or None, components)
    elif transfer_syntax in _JPEG_2000_SYNTAXES:
        size = _j2k_size(header)
        if isinstance(size, str):
            raise _not_the_codestream("JPEG 2000", size, transfer_syntax)
        width, height, components = size
        multi_component = transfer_syntax in _MULTI_COMPONENT_SYNTAXES
        _check_dimensions("JPEG 2000", image, width, height, None if multi_component else components)
    elif transfer_syntax == RLELossless:
        _check_rle_header(header, image)


def _not_the_codestream(family: str, problem: str, transfer_syntax: UID) -> InvalidInstance:
    """The refusal of a first frame that is not the codestream its transfer syntax declares."""
    return InvalidInstance(
        f"Pixel Data (7FE0,0010) is not a {family} codestream: the first frame {problem}; "
        f"declared {_syntax_name(transfer_syntax)} (PS3.5 A.4)",
        CANNOT_UNDERSTAND,
    )


def _check_dimensions(family: str, image: _ImagePixel, width: int, height: int | None, components: int | None) -> None:
    """Rows, Columns and Samples per Pixel must be what the codestream header says (PS3.5 8.2)."""
    counted = "?" if components is None else str(components)
    found = f"the first frame is {width} x {height or '?'} with {counted} component{'' if components == 1 else 's'}"
    checks = (
        ("Rows", "(0028,0010)", image.rows, height),
        ("Columns", "(0028,0011)", image.columns, width),
        ("Samples per Pixel", "(0028,0002)", image.samples_per_pixel, components),
    )
    for name, tag, declared, coded in checks:
        if coded is not None and declared != coded:
            raise InvalidInstance(
                f"{name} {tag} is {declared}, the {family} codestream has {coded}; {found} (PS3.5 8.2)",
                CANNOT_UNDERSTAND,
            )


def _jpeg_frame_header(data: bytes) -> tuple[int, int, int, int] | str:
    """Marker, height, width and components of the first JPEG or JPEG-LS frame header, or why there is none.

    Walks the marker segments from SOI to the first SOFn (ITU-T T.81 B.2.2)
    or SOF55 (ITU-T T.87 C.2.2); both give P, Y, X and Nf in the same layout.
    """
    if not data.startswith(_JPEG_SOI):
        return f"does not start with SOI FFD8 but {data[:4].hex(' ').upper() or 'nothing'}"
    position = len(_JPEG_SOI)
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return f"has no marker at byte {position}"
        marker = data[position + 1]
        if marker == 0xFF:
            position += 1
            continue
        if marker in _JPEG_STANDALONE_MARKERS:
            position += 2
            continue
        if marker in _JPEG_SOF_MARKERS or marker == _JPEG_SOF55:
            if position + 10 > len(data):
                return "has a cut frame header"
            height, width = struct.unpack_from(">HH", data, position + 5)
            return marker, height, width, data[position + 9]
        if marker in _JPEG_SCAN_OR_END_MARKERS:
            return f"has no frame header before marker FF{marker:02X}"
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if length < 2:
            return f"has a marker segment of length {length} at byte {position}"
        position += 2 + length
    return "ends before its frame header (SOF)"


def _j2k_size(data: bytes) -> tuple[int, int, int] | str:
    """Width, height and components from the SIZ marker segment (ISO/IEC 15444-1 A.5.1), or why there is none.

    A JP2 file (ISO/IEC 15444-1 Annex I), which PS3.5 A.4.4 does not allow
    but some senders write, is followed to its contiguous codestream box.
    """
    start = 0
    if data.startswith(_JP2_SIGNATURE):
        box = _jp2_codestream_start(data)
        if box is None:
            return "is a JP2 file without a codestream box (jp2c)"
        start = box
    if data[start : start + len(_J2K_SOC_SIZ)] != _J2K_SOC_SIZ:
        shown = data[start : start + 4].hex(" ").upper() or "nothing"
        return f"does not start with SOC FF4F and SIZ FF51 but {shown}"
    if len(data) < start + _J2K_SIZ_LENGTH:
        return "has a cut SIZ marker segment"
    xsiz, ysiz, x_offset, y_offset = struct.unpack_from(">4L", data, start + 8)
    (components,) = struct.unpack_from(">H", data, start + 40)
    return xsiz - x_offset, ysiz - y_offset, components


def _jp2_codestream_start(data: bytes) -> int | None:
    """Where the codestream of a JP2 file starts: the contents of its jp2c box (ISO/IEC 15444-1 I.4)."""
    position = 0
    while position + 8 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        header = 8
        if length == 1 and position + 16 <= len(data):
            length = int.from_bytes(data[position + 8 : position + 16], "big")
            header = 16
        elif length == 0:
            length = len(data) - position
        if data[position + 4 : position + 8] == _JP2_CODESTREAM_BOX:
            return position + header
        if length < header:
            return None
        position += length
    return None


def _check_rle_header(header: bytes, image: _ImagePixel) -> None:
    """The RLE header: 1 to 15 segments, the first at byte 64, one per byte of each sample (PS3.5 G.5, G.2)."""
    if len(header) < _RLE_HEADER.size:
        raise InvalidInstance(
            f"Pixel Data (7FE0,0010) RLE header is cut: {len(header)} of {_RLE_HEADER.size} bytes (PS3.5 G.5)",
            CANNOT_UNDERSTAND,
        )
    segments, first, *_ = _RLE_HEADER.unpack_from(header)
    if not 1 <= segments <= _RLE_MAX_SEGMENTS or first != _RLE_FIRST_SEGMENT_OFFSET:
        raise InvalidInstance(
            f"Pixel Data (7FE0,0010) is not an RLE frame: header declares {segments} segments, the first at "
            f"byte {first}; 1 to 15 segments from byte 64 expected (PS3.5 G.5)",
            CANNOT_UNDERSTAND,
        )
    if image.bits_allocated % 8 == 0:
        expected = image.samples_per_pixel * image.bits_allocated // 8
        if segments != expected:
            raise InvalidInstance(
                f"Pixel Data (7FE0,0010) has {segments} RLE segments, {expected} expected: Samples per Pixel "
                f"{image.samples_per_pixel} x Bits Allocated {image.bits_allocated} / 8 (PS3.5 G.2)",
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
    """Parse one instance, check its pixel data and summarise it, without decoding its pixels.

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
        Status ``0xC000`` *Cannot understand* (PS3.4 Annex B.2.3) when pydicom
        cannot parse the data or its Pixel Data (7FE0,0010) cannot be read as
        declared; ``0xA900`` when its Image Pixel module (PS3.3 C.7.6.3) has
        values no decoder can follow. See the module description.
    """
    ds = _read(data)
    meta = getattr(ds, "file_meta", None)
    declared = meta.get("TransferSyntaxUID") if meta is not None else None
    declared_syntax = str(declared).rstrip("\x00 ") if declared else None
    _check_pixel_data(ds, declared_syntax)
    transfer_syntax = declared_syntax or guess_transfer_syntax(ds)
    return ds, summarize(ds, transfer_syntax)


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
