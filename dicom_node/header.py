"""A JSON-serialisable summary of one received DICOM instance.

:func:`summarize` reads the attributes that routing, indexing and series
assembly need from a parsed data set, without touching the pixel data. Every
attribute is read on its own and defensively: a value that cannot be decoded
in its Specific Character Set (PS3.5 Section 6.1) or a malformed number
(DS/IS, PS3.5 Section 6.2) gives ``None`` (or, for text, the raw text with
undecodable bytes replaced by U+FFFD) and never an exception.

For Enhanced CT (PS3.3 A.38) and other multi-frame functional-group IODs the
geometry comes from the Shared and Per-Frame Functional Groups Sequences
(PS3.3 C.7.6.16): Plane Position (Patient) (C.7.6.16.2.3), Plane Orientation
(Patient) (C.7.6.16.2.4) and Pixel Measures (C.7.6.16.2.1).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag

__all__ = ["InstanceHeader", "summarize"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_REPLACEMENT = "\ufffd"

Vector3 = tuple[float, float, float]

_REQUIRED_FIELDS = (
    "sop_instance_uid",
    "sop_class_uid",
    "study_instance_uid",
    "series_instance_uid",
    "transfer_syntax_uid",
)


@dataclass(frozen=True)
class InstanceHeader:
    """Summary of one composite instance, as needed to index and route it.

    Attribute names follow the DICOM keywords of PS3.6 (snake case). Absent,
    empty or malformed values are ``None``. Person names are the decoded
    text of the PN value (PS3.5 6.2.1), with component groups separated by
    ``=``. Multi-valued text (for example Convolution Kernel) is joined with
    a backslash, the DICOM value delimiter (PS3.5 6.4).

    Attributes
    ----------
    frame_positions : tuple of (float, float, float) or None
        For multi-frame images with a Per-Frame Functional Groups Sequence,
        the Image Position (Patient) of every frame in frame order
        (PS3.3 C.7.6.16.2.3); ``None`` for single-frame images.
    image_position : (float, float, float) or None
        Image Position (Patient) (0020,0032) of the instance, or of its
        first frame for multi-frame images.
    """

    sop_instance_uid: str | None
    sop_class_uid: str | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    transfer_syntax_uid: str | None
    frame_of_reference_uid: str | None = None
    modality: str | None = None
    patient_id: str | None = None
    issuer_of_patient_id: str | None = None
    patient_name: str | None = None
    patient_birth_date: str | None = None
    patient_age: str | None = None
    patient_sex: str | None = None
    study_date: str | None = None
    study_time: str | None = None
    study_description: str | None = None
    accession_number: str | None = None
    series_description: str | None = None
    series_number: int | None = None
    instance_number: int | None = None
    image_type: tuple[str, ...] = ()
    image_orientation: tuple[float, float, float, float, float, float] | None = None
    image_position: Vector3 | None = None
    slice_thickness: float | None = None
    spacing_between_slices: float | None = None
    pixel_spacing: tuple[float, float] | None = None
    rows: int | None = None
    columns: int | None = None
    number_of_frames: int | None = None
    frame_positions: tuple[Vector3, ...] | None = None
    images_in_acquisition: int | None = None
    body_part_examined: str | None = None
    convolution_kernel: str | None = None
    specific_character_set: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the header as a dictionary of JSON types.

        Returns
        -------
        dict
            Tuples become lists; every value is ``None``, ``str``, ``int``,
            ``float`` or a (nested) list of those, so ``json.dumps`` works
            with ``allow_nan=False``.
        """
        return {key: _to_json_value(value) for key, value in asdict(self).items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InstanceHeader:
        """Rebuild a header from :meth:`to_json` output.

        Parameters
        ----------
        data : Mapping
            A dictionary as produced by :meth:`to_json`. Unknown keys are
            ignored and missing optional keys take their defaults, so headers
            stored by an older version can still be read.

        Returns
        -------
        InstanceHeader
            An object equal to the one that was serialised.
        """
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        for key in ("image_type",):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        for key in ("image_orientation", "image_position", "pixel_spacing"):
            if values.get(key) is not None:
                values[key] = tuple(float(v) for v in values[key])
        if values.get("frame_positions") is not None:
            values["frame_positions"] = tuple(
                (float(p[0]), float(p[1]), float(p[2])) for p in values["frame_positions"]
            )
        for key in _REQUIRED_FIELDS:
            values.setdefault(key, None)
        return cls(**values)


def _to_json_value(value: Any) -> Any:
    """Convert one field value to JSON types (tuples to lists, non-finite floats to ``None``)."""
    if isinstance(value, (tuple, list)):
        return [_to_json_value(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _safe(read: Callable[[], _T]) -> _T | None:
    """Run one attribute reader, turning any decoding or conversion error into ``None``."""
    try:
        return read()
    except Exception as exc:  # noqa: BLE001 - a header read must never fail on one bad value
        logger.debug("attribute could not be read: %s", type(exc).__name__)
        return None


def _raw_text(ds: Dataset, tag: BaseTag) -> str | None:
    """Return the undecoded bytes of an element as text, non-ASCII bytes replaced by U+FFFD."""
    try:
        elem = ds.get_item(tag)
    except Exception:  # noqa: BLE001 - pydicom may raise any exception type here
        return None
    if elem is None:
        return None
    raw = elem.value
    if not isinstance(raw, (bytes, bytearray)):
        return None
    text = bytes(raw).decode("ascii", errors="replace")
    cleaned = "".join(ch if (ch.isprintable() or ch == _REPLACEMENT) else _REPLACEMENT for ch in text)
    cleaned = cleaned.strip(" \x00")
    return cleaned or None


def _text(ds: Dataset, keyword: str) -> str | None:
    """Read a text attribute (AE, AS, CS, DA, LO, PN, SH, TM, UI ...) as ``str``.

    Multiple values are joined with a backslash (PS3.5 6.4). When the value
    cannot be decoded in the data set's character set, the raw bytes are
    returned with non-ASCII bytes replaced by U+FFFD.
    """
    tag = Tag(keyword)

    def read() -> str | None:
        if tag not in ds:
            return None
        value = ds[tag].value
        if value is None or isinstance(value, (bytes, bytearray)):
            return _raw_text(ds, tag)
        if isinstance(value, str):
            return value
        if isinstance(value, MultiValue):
            return "\\".join(str(v) for v in value)
        return str(value)

    try:
        text = read()
    except Exception as exc:  # noqa: BLE001 - a header read must never fail on one bad value
        logger.debug("text attribute %s could not be decoded: %s", keyword, type(exc).__name__)
        text = _raw_text(ds, tag)
    if text is None:
        return None
    text = text.strip(" \x00")
    return text or None


def _number(ds: Dataset, keyword: str, kind: type[float | int]) -> float | int | None:
    """Read the first value of a numeric attribute (DS, IS, US, FD ...); malformed gives ``None``."""

    def read() -> float | int | None:
        if keyword not in ds:
            return None
        value = ds[keyword].value
        if value is None or value == "":
            return None
        if isinstance(value, (list, tuple, MultiValue)):
            if len(value) == 0:
                return None
            value = value[0]
        number = float(value)
        if not math.isfinite(number):
            return None
        if kind is int:
            if number != int(number):
                return None
            return int(number)
        return number

    return _safe(read)


def _floats(ds: Dataset | None, keyword: str, count: int) -> tuple[float, ...] | None:
    """Read a multi-valued numeric attribute with exactly ``count`` finite values."""
    if ds is None:
        return None

    def read() -> tuple[float, ...] | None:
        if keyword not in ds:
            return None
        value = ds[keyword].value
        if value is None or value == "":
            return None
        items = value if isinstance(value, (list, tuple, MultiValue)) else [value]
        values = tuple(float(v) for v in items)
        if len(values) != count or not all(math.isfinite(v) for v in values):
            return None
        return values

    return _safe(read)


def _first_item(ds: Dataset | None, keyword: str) -> Dataset | None:
    """Return the first item of a sequence attribute, or ``None``."""
    if ds is None:
        return None

    def read() -> Dataset | None:
        if keyword not in ds:
            return None
        seq = ds[keyword].value
        if not seq:
            return None
        item = seq[0]
        return item if isinstance(item, Dataset) else None

    return _safe(read)


def _functional_group_value(
    shared: Dataset | None, first_frame: Dataset | None, macro: str, keyword: str, count: int
) -> tuple[float, ...] | None:
    """Read an attribute of a functional group macro, shared first then per-frame (PS3.3 C.7.6.16)."""
    for group in (shared, first_frame):
        values = _floats(_first_item(group, macro), keyword, count)
        if values is not None:
            return values
    return None


def _frame_positions(ds: Dataset) -> tuple[Vector3, ...] | None:
    """Image Position (Patient) of each frame from the Per-Frame Functional Groups Sequence."""

    def read() -> tuple[Vector3, ...] | None:
        if "PerFrameFunctionalGroupsSequence" not in ds:
            return None
        positions: list[Vector3] = []
        for frame in ds.PerFrameFunctionalGroupsSequence:
            values = _floats(_first_item(frame, "PlanePositionSequence"), "ImagePositionPatient", 3)
            if values is None:
                return None
            positions.append((values[0], values[1], values[2]))
        return tuple(positions) or None

    return _safe(read)


def _as_vector3(values: tuple[float, ...] | None) -> Vector3 | None:
    """Narrow a 3-tuple of floats to the :data:`Vector3` type."""
    if values is None:
        return None
    return (values[0], values[1], values[2])


def summarize(ds: Dataset, transfer_syntax_uid: str | None) -> InstanceHeader:
    """Summarise a parsed data set into an :class:`InstanceHeader`.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The data set; its pixel data is never decoded.
    transfer_syntax_uid : str or None
        The transfer syntax the data set was encoded with (from the file meta
        information, PS3.10 7.1, or the accepted presentation context,
        PS3.8 9.3.2.2).

    Returns
    -------
    InstanceHeader
        The summary. This function never raises because of a value in the
        data set: undecodable text keeps its raw bytes with U+FFFD
        replacements, a malformed number becomes ``None``.
    """
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    first_frame = _first_item(ds, "PerFrameFunctionalGroupsSequence")
    frame_positions = _frame_positions(ds)

    orientation = _floats(ds, "ImageOrientationPatient", 6) or _functional_group_value(
        shared, first_frame, "PlaneOrientationSequence", "ImageOrientationPatient", 6
    )
    position = _as_vector3(_floats(ds, "ImagePositionPatient", 3))
    if position is None and frame_positions:
        position = frame_positions[0]

    pixel_spacing = _floats(ds, "PixelSpacing", 2) or _functional_group_value(
        shared, first_frame, "PixelMeasuresSequence", "PixelSpacing", 2
    )
    thickness = _number(ds, "SliceThickness", float)
    if thickness is None:
        measured = _functional_group_value(shared, first_frame, "PixelMeasuresSequence", "SliceThickness", 1)
        thickness = measured[0] if measured else None
    spacing = _number(ds, "SpacingBetweenSlices", float)
    if spacing is None:
        measured = _functional_group_value(shared, first_frame, "PixelMeasuresSequence", "SpacingBetweenSlices", 1)
        spacing = measured[0] if measured else None

    image_type_text = _text(ds, "ImageType")
    image_type = tuple(part for part in image_type_text.split("\\")) if image_type_text else ()

    return InstanceHeader(
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        sop_class_uid=_text(ds, "SOPClassUID"),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        series_instance_uid=_text(ds, "SeriesInstanceUID"),
        transfer_syntax_uid=str(transfer_syntax_uid) if transfer_syntax_uid else None,
        frame_of_reference_uid=_text(ds, "FrameOfReferenceUID"),
        modality=_text(ds, "Modality"),
        patient_id=_text(ds, "PatientID"),
        issuer_of_patient_id=_text(ds, "IssuerOfPatientID"),
        patient_name=_text(ds, "PatientName"),
        patient_birth_date=_text(ds, "PatientBirthDate"),
        patient_age=_text(ds, "PatientAge"),
        patient_sex=_text(ds, "PatientSex"),
        study_date=_text(ds, "StudyDate"),
        study_time=_text(ds, "StudyTime"),
        study_description=_text(ds, "StudyDescription"),
        accession_number=_text(ds, "AccessionNumber"),
        series_description=_text(ds, "SeriesDescription"),
        series_number=_int(ds, "SeriesNumber"),
        instance_number=_int(ds, "InstanceNumber"),
        image_type=image_type,
        image_orientation=_as_orientation(orientation),
        image_position=position,
        slice_thickness=_float(thickness),
        spacing_between_slices=_float(spacing),
        pixel_spacing=(pixel_spacing[0], pixel_spacing[1]) if pixel_spacing else None,
        rows=_int(ds, "Rows"),
        columns=_int(ds, "Columns"),
        number_of_frames=_int(ds, "NumberOfFrames"),
        frame_positions=frame_positions,
        images_in_acquisition=_int(ds, "ImagesInAcquisition"),
        body_part_examined=_text(ds, "BodyPartExamined"),
        convolution_kernel=_text(ds, "ConvolutionKernel"),
        specific_character_set=_text(ds, "SpecificCharacterSet"),
    )


def _int(ds: Dataset, keyword: str) -> int | None:
    """Read an integer attribute; malformed or non-integral values give ``None``."""
    value = _number(ds, keyword, int)
    return int(value) if value is not None else None


def _float(value: float | None) -> float | None:
    """Coerce an optional number to ``float``."""
    return float(value) if value is not None else None


def _as_orientation(
    values: tuple[float, ...] | None,
) -> tuple[float, float, float, float, float, float] | None:
    """Narrow a 6-tuple of floats to the Image Orientation (Patient) type."""
    if values is None:
        return None
    return (values[0], values[1], values[2], values[3], values[4], values[5])
