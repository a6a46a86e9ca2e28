"""Load one CT series from DICOM files into a :class:`~models.findings.Volume` of Hounsfield units.

The loader is deliberately strict: a series that is not one regular, gap-free stack of parallel
slices is refused with a :class:`VolumeError` that names the offending files, because every later
number (volumes in mL, functional volume, lobe fractions) silently depends on the geometry being
right.  Classic single-frame CT Image Storage and multi-frame Enhanced CT Image Storage are both
read; compressed transfer syntaxes are decoded by pydicom's pixel-data handlers (pylibjpeg for
JPEG / JPEG 2000 / JPEG-LS / RLE, zlib for deflate).

Slices are ordered along the slice normal (row cosine x column cosine of Image Orientation
(Patient), DICOM PS3.3 C.7.6.2.1.1), which is the only ordering that is right for every patient
position; Instance Number and file names are not trusted.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from models.findings import AcquisitionHeader, Geometry, Volume

__all__ = [
    "DUPLICATE_POSITION_TOLERANCE_MM",
    "ORIENTATION_TOLERANCE",
    "PIXEL_SPACING_ATOL_MM",
    "PIXEL_SPACING_RTOL",
    "SPACING_TOLERANCE_FRACTION",
    "PatientContext",
    "VolumeError",
    "load_series",
    "parse_da",
    "patient_context",
]

logger = logging.getLogger(__name__)

#: Largest difference between direction cosines of two slices that still counts as "parallel".
ORIENTATION_TOLERANCE = 1e-3
#: Two slices have the same pixel spacing when they agree within these (relative, absolute in mm).
PIXEL_SPACING_RTOL = 1e-3
PIXEL_SPACING_ATOL_MM = 1e-4
#: Largest deviation from unit length and from orthogonality of the two direction cosines.
DIRECTION_COSINE_TOLERANCE = 1e-2
#: Two slices whose positions along the normal differ by less than this are the same position.
DUPLICATE_POSITION_TOLERANCE_MM = 0.01
#: A gap between consecutive slices may differ from the median gap by this fraction at most;
#: beyond it a slice is missing (or extra) and voxel volumes would be wrong.
SPACING_TOLERANCE_FRACTION = 0.1

_AGE_PATTERN = re.compile(r"^(\d{3})([DWMY])$")
_DAYS_PER_YEAR = 365.2425
_AGE_UNIT_IN_YEARS = {"D": 1.0 / _DAYS_PER_YEAR, "W": 7.0 / _DAYS_PER_YEAR, "M": 1.0 / 12.0, "Y": 1.0}


class VolumeError(ValueError):
    """A set of DICOM files that cannot be turned into one CT volume; the message says why."""


@dataclass(frozen=True)
class PatientContext:
    """Patient facts that some models take as input besides the image (STOIC uses age and sex).

    ``age_years`` is fractional years at the time of the study, ``None`` when unknown;
    ``sex`` is ``"M"`` or ``"F"``, ``None`` when absent or other (DICOM "O").
    """

    age_years: float | None
    sex: Literal["M", "F"] | None


@dataclass(frozen=True)
class _SliceHeader:
    """Everything about one frame that is needed before its pixels are decoded."""

    path: Path
    frame: int | None
    sop_instance_uid: str
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int
    slope: float
    intercept: float
    thickness: float | None


def _parse_age_string(value: str) -> float | None:
    """Years from a DICOM Age String ("058Y", "006M", "010W", "003D"; PS3.5 table 6.2-1)."""
    match = _AGE_PATTERN.match(value.strip().upper())
    if match is None:
        return None
    return int(match.group(1)) * _AGE_UNIT_IN_YEARS[match.group(2)]


def parse_da(value: str | None) -> date | None:
    """A DICOM DA value (YYYYMMDD) as a date, ``None`` when empty or malformed."""
    text = (value or "").strip()
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def _age_between(birth: date, when: date) -> float:
    """Age in years on ``when``: completed calendar years plus the elapsed part of the next one."""
    years = when.year - birth.year - ((when.month, when.day) < (birth.month, birth.day))

    def birthday(year: int) -> date:
        try:
            return birth.replace(year=year)
        except ValueError:  # born on 29 February
            return date(year, 2, 28)

    last, upcoming = birthday(birth.year + years), birthday(birth.year + years + 1)
    return years + (when - last).days / (upcoming - last).days


def patient_context(ds: Dataset) -> PatientContext:
    """Age and sex of the patient from a dataset of the series.

    Patient's Age (0010,1010) is used when present and well formed because it is what the
    modality computed at acquisition; otherwise the age is derived from Patient's Birth Date and
    the first available of Study, Series, Acquisition or Content Date.  Implausible results (a
    negative age or above 130 years) are discarded rather than passed to a model.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        Any instance of the series (pixel data not needed).

    Returns
    -------
    PatientContext
        ``age_years`` and ``sex``, each ``None`` when unknown.
    """
    age = _parse_age_string(str(ds.get("PatientAge", "") or ""))
    if age is None:
        birth = parse_da(str(ds.get("PatientBirthDate", "") or ""))
        for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
            when = parse_da(str(ds.get(keyword, "") or ""))
            if birth is not None and when is not None:
                age = _age_between(birth, when)
                break
    if age is not None and not 0.0 <= age <= 130.0:
        logger.warning("discarding implausible patient age of %.1f years", age)
        age = None
    raw_sex = str(ds.get("PatientSex", "") or "").strip().upper()
    sex: Literal["M", "F"] | None = "M" if raw_sex == "M" else "F" if raw_sex == "F" else None
    return PatientContext(age_years=age, sex=sex)


def _functional_item(ds: Dataset, frame_index: int, sequence: str) -> Dataset | None:
    """First item of a functional group macro for one frame (PS3.3 C.7.6.16).

    A macro may sit in the Per-Frame or the Shared Functional Groups Sequence; per-frame wins.
    """
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame_index < len(per_frame):
        inner = per_frame[frame_index].get(sequence)
        if inner:
            item: Dataset = inner[0]
            return item
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        inner = shared[0].get(sequence)
        if inner:
            common: Dataset = inner[0]
            return common
    return None


def _value(item: Dataset | None, keyword: str, path: Path, what: str) -> Any:
    """The value of ``keyword`` in ``item`` (``None`` when absent); a value pydicom cannot convert is a
    :class:`VolumeError` naming the file and the attribute."""
    try:
        return None if item is None else item.get(keyword)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for a malformed value
        raise VolumeError(f"{path.name}: {keyword} ({what}) cannot be read: {exc}") from exc


def _required(item: Dataset | None, keyword: str, path: Path, what: str) -> Any:
    """The value of ``keyword`` in ``item``, or a :class:`VolumeError` naming the file."""
    value = _value(item, keyword, path, what)
    if value is None or value == "":
        raise VolumeError(f"{path.name} has no {keyword} ({what}); cannot place the slice in space")
    return value


def _numbers(item: Dataset | None, keyword: str, count: int, path: Path, what: str) -> tuple[float, ...]:
    """Exactly ``count`` finite numbers from a DS/FD attribute, or a :class:`VolumeError` saying what is wrong.

    Senders do write NaN, infinities, words and the wrong number of values into geometry
    attributes; each of those would silently corrupt every volume and distance downstream.
    """
    value = _required(item, keyword, path, what)
    values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise VolumeError(f"{path.name}: {keyword} ({what}) is not numeric: {value!r}") from exc
    if len(numbers) != count:
        raise VolumeError(f"{path.name}: {keyword} ({what}) has {len(numbers)} values, {count} are required")
    if not all(math.isfinite(v) for v in numbers):
        raise VolumeError(f"{path.name}: {keyword} ({what}) is not finite: {list(numbers)}")
    return numbers


def _matrix_size(ds: Dataset, keyword: str, path: Path) -> int:
    """Rows or Columns as a positive integer."""
    value = _required(ds, keyword, path, "matrix size")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise VolumeError(f"{path.name}: {keyword} (matrix size) is {value!r}, a positive integer is required")


def _pixel_spacing(item: Dataset | None, path: Path, what: str) -> tuple[float, float]:
    """Pixel Spacing (row, column) in mm, both positive."""
    row, column = _numbers(item, "PixelSpacing", 2, path, what)
    if row <= 0 or column <= 0:
        raise VolumeError(f"{path.name}: PixelSpacing ({what}) must be positive, got {[row, column]} mm")
    return row, column


def _orientation(item: Dataset | None, path: Path, what: str) -> np.ndarray:
    """Image Orientation (Patient): two orthogonal unit direction cosines (PS3.3 C.7.6.2.1.1)."""
    cosines = np.asarray(_numbers(item, "ImageOrientationPatient", 6, path, what), dtype=float)
    row, column = cosines[:3], cosines[3:]
    unit = abs(np.linalg.norm(row) - 1) < DIRECTION_COSINE_TOLERANCE
    unit = unit and abs(np.linalg.norm(column) - 1) < DIRECTION_COSINE_TOLERANCE
    if not unit or abs(float(row @ column)) > DIRECTION_COSINE_TOLERANCE:
        raise VolumeError(
            f"{path.name}: ImageOrientationPatient ({what}) {cosines.round(4).tolist()} is not two orthogonal "
            "unit vectors"
        )
    return cosines


def _optional_float(value: Any) -> float | None:
    """A finite float from a DICOM DS/FD value, ``None`` when empty, not a number or not finite."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _thickness(item: Dataset | None) -> float | None:
    """Slice Thickness when it is a positive number, else ``None`` (it is optional for the loader)."""
    try:
        value = _optional_float(item.get("SliceThickness") if item is not None else None)
    except Exception:  # noqa: BLE001 - a malformed optional value counts as absent
        return None
    return value if value is not None and value > 0 else None


def _rescale(item: Dataset | None, path: Path) -> tuple[float, float]:
    """Rescale slope and intercept; identity with a log line when a file omits them.

    A slope of zero or a value that is present but not a finite number is refused: the stored
    values could then not be turned into Hounsfield units.
    """
    raw = {keyword: _value(item, keyword, path, "rescale to HU") for keyword in ("RescaleSlope", "RescaleIntercept")}
    slope, intercept = (_optional_float(raw[k]) for k in ("RescaleSlope", "RescaleIntercept"))
    for keyword, number in (("RescaleSlope", slope), ("RescaleIntercept", intercept)):
        if number is None and raw[keyword] not in (None, ""):
            raise VolumeError(f"{path.name}: {keyword} {raw[keyword]!r} is not a finite number")
    if slope == 0:
        raise VolumeError(f"{path.name}: RescaleSlope is 0; the stored values cannot be turned into HU")
    if slope is None or intercept is None:
        logger.warning("%s has no Rescale Slope/Intercept; assuming stored values are HU", path.name)
    return (1.0 if slope is None else slope), (0.0 if intercept is None else intercept)


def _text(value: Any) -> str | None:
    """A DICOM string value (several values joined with a backslash) stripped, None when absent or empty."""
    if value is None:
        return None
    parts = [str(v).strip() for v in value] if isinstance(value, MultiValue | list | tuple) else [str(value).strip()]
    text = "\\".join(p for p in parts if p)
    return text or None


def _acquisition_header(ds: Dataset) -> AcquisitionHeader:
    """Manufacturer, Convolution Kernel and contrast agent of one instance (single-frame or Enhanced CT).

    An Enhanced CT carries the kernel in the CT Reconstruction functional group macro and its agents
    in the Contrast/Bolus Agent Sequence (0018,0012) of the Enhanced Contrast/Bolus module (PS3.3);
    an unreadable value counts as absent, since these attributes only qualify the results.
    """

    def read(item: Dataset | None, keyword: str) -> str | None:
        try:
            return _text(item.get(keyword)) if item is not None else None
        except Exception:  # noqa: BLE001 - a malformed optional value counts as absent
            return None

    kernel = read(ds, "ConvolutionKernel") or read(
        _functional_item(ds, 0, "CTReconstructionSequence"), "ConvolutionKernel"
    )
    agent = read(ds, "ContrastBolusAgent")
    if agent is None:
        try:
            items = ds.get("ContrastBolusAgentSequence") or []
            meanings = [read(item, "CodeMeaning") for item in items]
        except Exception:  # noqa: BLE001 - as above
            meanings = []
        agent = ", ".join(m for m in meanings if m) or None
    return AcquisitionHeader(manufacturer=read(ds, "Manufacturer"), convolution_kernel=kernel, contrast_agent=agent)


def _is_multiframe(ds: Dataset) -> bool:
    """True for Enhanced (functional-group) images, whose geometry is per frame."""
    return "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds


def _frame_headers(ds: Dataset, path: Path) -> list[_SliceHeader]:
    """One header per frame of an Enhanced CT image (positions per frame, the rest shared)."""
    try:
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError) as exc:
        raise VolumeError(f"{path.name}: Number of Frames {ds.get('NumberOfFrames')!r} is not a number") from exc
    if n_frames < 1:
        raise VolumeError(f"{path.name}: Number of Frames is {n_frames}")
    rows = _matrix_size(ds, "Rows", path)
    columns = _matrix_size(ds, "Columns", path)
    headers = []
    for index in range(n_frames):
        position = _functional_item(ds, index, "PlanePositionSequence")
        orientation = _functional_item(ds, index, "PlaneOrientationSequence")
        measures = _functional_item(ds, index, "PixelMeasuresSequence")
        transform = _functional_item(ds, index, "PixelValueTransformationSequence")
        frame = f"frame {index + 1}"
        slope, intercept = _rescale(transform, path)
        headers.append(
            _SliceHeader(
                path=path,
                frame=index + 1,
                sop_instance_uid=str(ds.get("SOPInstanceUID", "") or ""),
                position=np.asarray(_numbers(position, "ImagePositionPatient", 3, path, frame), dtype=float),
                orientation=_orientation(orientation, path, frame),
                pixel_spacing=_pixel_spacing(measures, path, frame),
                rows=rows,
                columns=columns,
                slope=slope,
                intercept=intercept,
                thickness=_thickness(measures),
            )
        )
    return headers


def _single_header(ds: Dataset, path: Path) -> _SliceHeader:
    """The header of a classic single-frame image (Image Plane module, PS3.3 C.7.6.2)."""
    plane = "Image Plane module"
    slope, intercept = _rescale(ds, path)
    return _SliceHeader(
        path=path,
        frame=None,
        sop_instance_uid=str(ds.get("SOPInstanceUID", "") or ""),
        position=np.asarray(_numbers(ds, "ImagePositionPatient", 3, path, plane), dtype=float),
        orientation=_orientation(ds, path, plane),
        pixel_spacing=_pixel_spacing(ds, path, plane),
        rows=_matrix_size(ds, "Rows", path),
        columns=_matrix_size(ds, "Columns", path),
        slope=slope,
        intercept=intercept,
        thickness=_thickness(ds),
    )


def _read_headers(paths: Sequence[Path]) -> list[_SliceHeader]:
    """Read every file without pixel data and check that they form one series."""
    headers: list[_SliceHeader] = []
    series: dict[str, Path] = {}
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
            raise VolumeError(f"{path.name} is not a readable DICOM file: {exc}") from exc
        series.setdefault(str(ds.get("SeriesInstanceUID", "") or ""), path)
        if len(series) > 1:
            described = ", ".join(f"{uid or '(empty UID)'} (e.g. {p.name})" for uid, p in series.items())
            raise VolumeError(f"the files belong to more than one series: {described}")
        headers.extend(_frame_headers(ds, path) if _is_multiframe(ds) else [_single_header(ds, path)])
    return headers


def _check_consistent(headers: Sequence[_SliceHeader]) -> None:
    """Refuse stacks whose slices are not parallel or not the same matrix and pixel size."""
    first = headers[0]
    for header in headers[1:]:
        if np.max(np.abs(header.orientation - first.orientation)) > ORIENTATION_TOLERANCE:
            raise VolumeError(
                f"slices have differing orientation: {first.path.name} has ImageOrientationPatient "
                f"{first.orientation.round(4).tolist()}, {header.path.name} has "
                f"{header.orientation.round(4).tolist()}"
            )
        if (header.rows, header.columns) != (first.rows, first.columns):
            raise VolumeError(
                f"slices have differing matrix size: {first.path.name} is {first.rows}x{first.columns}, "
                f"{header.path.name} is {header.rows}x{header.columns}"
            )
        if not np.allclose(
            header.pixel_spacing, first.pixel_spacing, rtol=PIXEL_SPACING_RTOL, atol=PIXEL_SPACING_ATOL_MM
        ):
            raise VolumeError(
                f"slices have differing pixel spacing: {first.path.name} has {first.pixel_spacing} mm, "
                f"{header.path.name} has {header.pixel_spacing} mm"
            )


def _frame_label(header: _SliceHeader) -> str:
    """A file name, with the frame number for multi-frame images, for error messages."""
    return header.path.name if header.frame is None else f"{header.path.name} frame {header.frame}"


def _slice_spacing(headers: Sequence[_SliceHeader], along_normal: np.ndarray) -> float:
    """Median gap between consecutive sorted positions, after refusing duplicates and gaps."""
    if len(headers) == 1:
        thickness = headers[0].thickness
        if thickness is None or thickness <= 0:
            raise VolumeError(f"{headers[0].path.name} is a single slice without Slice Thickness")
        return thickness
    gaps = np.diff(along_normal)
    for k, gap in enumerate(gaps):
        if gap < DUPLICATE_POSITION_TOLERANCE_MM:
            raise VolumeError(
                f"duplicate slice position {along_normal[k]:.2f} mm along the slice normal: "
                f"{_frame_label(headers[k])} and {_frame_label(headers[k + 1])}"
            )
    spacing = float(np.median(gaps))
    for k, gap in enumerate(gaps):
        if abs(gap - spacing) > SPACING_TOLERANCE_FRACTION * spacing:
            raise VolumeError(
                f"slice spacing is not uniform: the gap between {_frame_label(headers[k])} "
                f"({along_normal[k]:.2f} mm) and {_frame_label(headers[k + 1])} "
                f"({along_normal[k + 1]:.2f} mm) is {gap:.2f} mm, the median gap is {spacing:.2f} mm "
                f"(tolerance {SPACING_TOLERANCE_FRACTION:.0%}); a slice is missing or extra"
            )
    return spacing


def _warn_if_tilted(headers: Sequence[_SliceHeader], normal: np.ndarray) -> None:
    """Log gantry tilt: positions that drift in-plane make the orthogonal geometry approximate."""
    steps = np.diff(np.stack([h.position for h in headers]), axis=0)
    in_plane = steps - np.outer(steps @ normal, normal)
    drift = float(np.max(np.linalg.norm(in_plane, axis=1))) if len(steps) else 0.0
    if drift > 0.05:
        logger.warning(
            "slice positions drift %.2f mm in-plane per slice (gantry tilt?); geometry is approximate",
            drift,
        )


def _decode(ds: Dataset, path: Path) -> np.ndarray:
    """Stored pixel values as ``[frame, row, column]``; a :class:`VolumeError` if undecodable."""
    if "PixelData" not in ds:
        raise VolumeError(f"{path.name} has no Pixel Data (7FE0,0010)")
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise VolumeError(f"{path.name} is not a single-channel (grayscale) image")
        pixels = np.asarray(ds.pixel_array)
    except VolumeError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise many types for malformed pixel descriptions
        name = f"{syntax.name} ({syntax})" if syntax is not None else "an unknown transfer syntax"
        raise VolumeError(f"cannot decode the pixel data of {path.name}, encoded as {name}: {exc}") from exc
    return pixels[np.newaxis] if pixels.ndim == 2 else pixels


def load_series(paths: Sequence[Path]) -> Volume:
    """Read one CT series into Hounsfield units on its own voxel grid.

    Headers are read first (without pixel data) so that a malformed series is refused before
    anything is decoded, then pixels are decoded file by file into one preallocated float32 array
    to bound memory for long series.

    Parameters
    ----------
    paths : sequence of pathlib.Path
        Every file of the series, in any order: single-frame CT images, or one or more
        multi-frame Enhanced CT images.

    Returns
    -------
    Volume
        ``hu[k]`` is the slice at the ``k``-th smallest position along the slice normal;
        ``hu = stored * RescaleSlope + RescaleIntercept`` per slice (or frame).

    Raises
    ------
    VolumeError
        No files; a file that is not DICOM; files of more than one series; slices that differ in
        orientation, matrix or pixel spacing; duplicate positions; non-uniform slice spacing;
        missing or undecodable pixel data.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise VolumeError("no DICOM files were given")
    headers = _read_headers(paths)
    _check_consistent(headers)
    row_cosine, column_cosine = headers[0].orientation[:3], headers[0].orientation[3:]
    normal = np.cross(row_cosine, column_cosine)
    order = np.argsort([float(h.position @ normal) for h in headers], kind="stable")
    headers = [headers[i] for i in order]
    along_normal = np.asarray([float(h.position @ normal) for h in headers])
    spacing_z = _slice_spacing(headers, along_normal)
    _warn_if_tilted(headers, normal)

    first = headers[0]
    hu = np.empty((len(headers), first.rows, first.columns), dtype=np.float32)
    slots: dict[Path, list[tuple[int, _SliceHeader]]] = {}
    for k, header in enumerate(headers):
        slots.setdefault(header.path, []).append((k, header))
    acquisition_header = AcquisitionHeader()
    for path, entries in slots.items():
        ds = pydicom.dcmread(path)
        if path == first.path:
            acquisition_header = _acquisition_header(ds)
        pixels = _decode(ds, path)
        for k, header in entries:
            frame = 0 if header.frame is None else header.frame - 1
            if frame >= pixels.shape[0] or pixels.shape[1:] != (first.rows, first.columns):
                raise VolumeError(f"{_frame_label(header)}: pixel data does not match Rows/Columns")
            with np.errstate(over="ignore", invalid="ignore"):
                np.multiply(pixels[frame], header.slope, out=hu[k], casting="unsafe")
                hu[k] += np.float32(header.intercept)
            if not np.isfinite(hu[k]).all():
                raise VolumeError(
                    f"{_frame_label(header)}: Rescale Slope {header.slope:g} and Intercept {header.intercept:g} "
                    "give values beyond the float32 range"
                )

    direction = np.column_stack([row_cosine, column_cosine, normal])
    geometry = Geometry(
        origin=(float(first.position[0]), float(first.position[1]), float(first.position[2])),
        spacing=(spacing_z, first.pixel_spacing[0], first.pixel_spacing[1]),
        direction=tuple((float(r[0]), float(r[1]), float(r[2])) for r in direction),
        shape=(hu.shape[0], hu.shape[1], hu.shape[2]),
    )
    if any(not h.sop_instance_uid for h in headers):
        logger.warning("some SOP Instance UIDs are empty; results cannot reference those source images")
    thicknesses = [h.thickness for h in headers if h.thickness is not None]
    multiframe = any(h.frame is not None for h in headers)
    logger.info("loaded %d slices %dx%d, spacing %s mm", hu.shape[0], hu.shape[1], hu.shape[2], geometry.spacing)
    return Volume(
        hu=hu,
        geometry=geometry,
        source_sop_instance_uids=tuple(h.sop_instance_uid for h in headers),
        source_frame_numbers=tuple(h.frame or 1 for h in headers) if multiframe else None,
        slice_thickness_mm=float(np.median(thicknesses)) if thicknesses else None,
        header=acquisition_header,
    )
