"""Geometric completeness of a received series.

:func:`assess_series` looks only at :class:`~dicom_node.header.InstanceHeader`
values: Image Position (Patient) (0020,0032) and Image Orientation (Patient)
(0020,0037) of the Image Plane module (PS3.3 C.7.6.2), or their per-frame
equivalents in the Plane Position and Plane Orientation functional groups of
multi-frame images (PS3.3 C.7.6.16.2.3 and C.7.6.16.2.4), and Images in
Acquisition (0020,1002) (PS3.3 C.7.6.1). Slice positions are projected on the
slice normal, the cross product of the row and column direction cosines
(PS3.3 C.7.6.2.1.1), so tilted and oblique stacks are measured along their
own axis.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from statistics import median
from typing import Any

from dicom_node.header import InstanceHeader

__all__ = [
    "DEFAULT_DUPLICATE_TOLERANCE_MM",
    "DEFAULT_ORIENTATION_TOLERANCE_DEG",
    "DEFAULT_SPACING_TOLERANCE",
    "SeriesGeometry",
    "assess_series",
]

DEFAULT_SPACING_TOLERANCE: float = 0.10
"""A gap is regular when within 10 % of the median spacing."""

DEFAULT_DUPLICATE_TOLERANCE_MM: float = 0.01
"""Two slices closer than this along the normal share one position."""

DEFAULT_ORIENTATION_TOLERANCE_DEG: float = 0.5
"""Slices whose row direction or normal differ from the first by more than this are inconsistent."""

_LISTED_PER_KIND = 5

Vector = tuple[float, float, float]


@dataclass(frozen=True)
class SeriesGeometry:
    """The slice geometry of a series and whether it is complete.

    Attributes
    ----------
    count : int
        Number of slices (frames of multi-frame images included) with a usable
        position and orientation.
    positions_mm : tuple of float
        Their positions along the slice normal, sorted, duplicates included.
    spacing_mm : float or None
        Median gap between distinct positions; ``None`` with fewer than two.
    uniform : bool
        Every gap is within the tolerance of the median.
    missing_slices : int
        Slices estimated missing from gaps of about k times the spacing.
    duplicate_positions : tuple of float
        Positions that occur more than once.
    expected_count : int or None
        Images in Acquisition (0020,1002) when the headers give it.
    complete : bool
        Contiguous from first to last at the series' spacing, with
        consistent orientation, no duplicate positions and, when
        ``expected_count`` is known, ``count == expected_count``.
    reasons : list of str
        Why the series is not complete, in words; empty when complete.
    coverage_mm : float or None
        First to last position plus one spacing.
    axial_tilt_deg : float or None
        Angle between the slice normal and the patient z (head-foot) axis.
    consistent_orientation : bool
        All slices share the first slice's orientation within tolerance.
    unplaced : int
        Instances without Image Position or Orientation (Patient): they cannot
        be placed in a volume.
    """

    count: int
    positions_mm: tuple[float, ...]
    spacing_mm: float | None
    uniform: bool
    missing_slices: int
    duplicate_positions: tuple[float, ...]
    expected_count: int | None
    complete: bool
    reasons: list[str] = field(default_factory=list)
    coverage_mm: float | None = None
    axial_tilt_deg: float | None = None
    consistent_orientation: bool = False
    unplaced: int = 0

    def to_json(self) -> dict[str, Any]:
        """Return the geometry as a dictionary of JSON types (tuples become lists)."""
        return {
            "count": self.count,
            "positions_mm": list(self.positions_mm),
            "spacing_mm": self.spacing_mm,
            "uniform": self.uniform,
            "missing_slices": self.missing_slices,
            "duplicate_positions": list(self.duplicate_positions),
            "expected_count": self.expected_count,
            "complete": self.complete,
            "reasons": list(self.reasons),
            "coverage_mm": self.coverage_mm,
            "axial_tilt_deg": self.axial_tilt_deg,
            "consistent_orientation": self.consistent_orientation,
            "unplaced": self.unplaced,
        }


def _mm(value: float) -> str:
    """Format a length for reasons: three decimals at most, at least one (``5.0``, ``0.625``)."""
    text = f"{value:.3f}".rstrip("0")
    if text.endswith("."):
        text += "0"
    return "0.0" if text == "-0.0" else text


def _plural(count: int, word: str) -> str:
    """``1 slice``, ``2 slices``."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _normalised(vector: Vector) -> Vector | None:
    """Return the unit vector, or ``None`` for a zero vector."""
    length = math.sqrt(sum(v * v for v in vector))
    if length == 0.0 or not math.isfinite(length):
        return None
    return (vector[0] / length, vector[1] / length, vector[2] / length)


def _cross(a: Vector, b: Vector) -> Vector:
    """Cross product a x b."""
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _dot(a: Vector, b: Vector) -> float:
    """Dot product."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _angle_deg(a: Vector, b: Vector) -> float:
    """Angle between two unit vectors in degrees."""
    return math.degrees(math.acos(max(-1.0, min(1.0, _dot(a, b)))))


def _axes(orientation: Sequence[float]) -> tuple[Vector, Vector] | None:
    """Unit row direction and slice normal from Image Orientation (Patient) (PS3.3 C.7.6.2.1.1)."""
    row = _normalised((orientation[0], orientation[1], orientation[2]))
    column = _normalised((orientation[3], orientation[4], orientation[5]))
    if row is None or column is None:
        return None
    normal = _normalised(_cross(row, column))
    if normal is None:
        return None
    return row, normal


def _listed(items: list[str], kind: str) -> list[str]:
    """Keep the first few reasons of one kind and summarise the rest."""
    if len(items) <= _LISTED_PER_KIND:
        return items
    rest = len(items) - _LISTED_PER_KIND
    return [*items[:_LISTED_PER_KIND], f"... and {rest} more {kind}"]


def assess_series(
    headers: Sequence[InstanceHeader],
    spacing_tolerance: float = DEFAULT_SPACING_TOLERANCE,
    duplicate_tolerance_mm: float = DEFAULT_DUPLICATE_TOLERANCE_MM,
    orientation_tolerance_deg: float = DEFAULT_ORIENTATION_TOLERANCE_DEG,
) -> SeriesGeometry:
    """Measure the slice geometry of one series and decide whether it is complete.

    Parameters
    ----------
    headers : Sequence of InstanceHeader
        The instances of one series, in any order; single-frame images use
        Image Position (Patient), multi-frame images their per-frame positions
        (``frame_positions``).
    spacing_tolerance : float, optional
        Relative tolerance of a gap around the median spacing (default 0.10).
    duplicate_tolerance_mm : float, optional
        Positions closer than this count as the same position.
    orientation_tolerance_deg : float, optional
        Largest angle between a slice's row direction or normal and the first
        slice's before the orientation counts as inconsistent.

    Returns
    -------
    SeriesGeometry
        The measurements, ``complete`` and, when not complete, ``reasons``.
        A series without any position/orientation is not complete and says so.

    Raises
    ------
    ValueError
        If a tolerance is negative.
    """
    if spacing_tolerance < 0 or duplicate_tolerance_mm < 0 or orientation_tolerance_deg < 0:
        raise ValueError("tolerances must not be negative")
    reasons: list[str] = []

    slices: list[tuple[Vector, Sequence[float]]] = []
    without_geometry = 0
    for header in headers:
        orientation = header.image_orientation
        positions: Sequence[Vector] = header.frame_positions or (
            (header.image_position,) if header.image_position is not None else ()
        )
        if orientation is None or not positions:
            without_geometry += 1
            continue
        slices.extend((position, orientation) for position in positions)
    if without_geometry:
        reasons.append(
            f"{without_geometry} of {_plural(len(headers), 'instance')} have no Image Position (Patient) "
            f"or Image Orientation (Patient)"
        )

    expected_count = _expected_count(headers)
    if not slices:
        if not headers:
            reasons.append("the series has no instances")
        return SeriesGeometry(
            count=0,
            positions_mm=(),
            spacing_mm=None,
            uniform=False,
            missing_slices=0,
            duplicate_positions=(),
            expected_count=expected_count,
            complete=False,
            reasons=reasons,
            unplaced=without_geometry,
        )

    reference = _axes(slices[0][1])
    if reference is None:
        reasons.append("Image Orientation (Patient) of the first slice is degenerate")
        return SeriesGeometry(
            count=len(slices),
            positions_mm=(),
            spacing_mm=None,
            uniform=False,
            missing_slices=0,
            duplicate_positions=(),
            expected_count=expected_count,
            complete=False,
            reasons=reasons,
            unplaced=without_geometry,
        )
    row, normal = reference
    consistent, worst = _orientation_consistency(slices, row, normal, orientation_tolerance_deg)
    if not consistent:
        reasons.append(f"image orientation differs between slices (up to {worst:.1f} degrees from the first slice)")
    axial_tilt = math.degrees(math.acos(min(1.0, abs(normal[2]))))

    positions_mm = tuple(sorted(_dot(position, normal) for position, _ in slices))
    distinct, duplicates = _distinct_positions(positions_mm, duplicate_tolerance_mm)
    if duplicates:
        reasons.extend(
            _listed(
                [f"more than one slice at z={_mm(z)}" for z in duplicates],
                "duplicate positions",
            )
        )

    spacing: float | None = None
    uniform = False
    missing = 0
    coverage: float | None = None
    if len(distinct) < 2:
        reasons.append("only one slice position: the spacing cannot be determined")
    else:
        gaps = [b - a for a, b in pairwise(distinct)]
        spacing = median(gaps)
        coverage = distinct[-1] - distinct[0] + spacing
        uniform, missing, gap_reasons = _gap_report(distinct, gaps, spacing, spacing_tolerance)
        reasons.extend(gap_reasons)

    count = len(positions_mm)
    if expected_count is not None and count != expected_count:
        shortfall = f" ({expected_count - count} missing)" if count < expected_count else ""
        reasons.append(
            f"{_plural(count, 'slice')} received, Images in Acquisition (0020,1002) says {expected_count}{shortfall}"
        )

    complete = (
        without_geometry == 0
        and consistent
        and len(distinct) >= 2
        and uniform
        and not duplicates
        and (expected_count is None or count == expected_count)
    )
    return SeriesGeometry(
        count=count,
        positions_mm=positions_mm,
        spacing_mm=spacing,
        uniform=uniform,
        missing_slices=missing,
        duplicate_positions=tuple(duplicates),
        expected_count=expected_count,
        complete=complete,
        reasons=reasons,
        coverage_mm=coverage,
        axial_tilt_deg=axial_tilt,
        consistent_orientation=consistent,
        unplaced=without_geometry,
    )


def _expected_count(headers: Sequence[InstanceHeader]) -> int | None:
    """The most frequent Images in Acquisition (0020,1002) value of the headers, if any."""
    values = Counter(h.images_in_acquisition for h in headers if h.images_in_acquisition)
    if not values:
        return None
    return values.most_common(1)[0][0]


def _orientation_consistency(
    slices: Sequence[tuple[Vector, Sequence[float]]], row: Vector, normal: Vector, tolerance_deg: float
) -> tuple[bool, float]:
    """Compare every slice's row direction and normal with the reference; return (ok, worst angle)."""
    worst = 0.0
    consistent = True
    for _, orientation in slices:
        axes = _axes(orientation)
        if axes is None:
            return False, 90.0
        angle = max(_angle_deg(axes[0], row), _angle_deg(axes[1], normal))
        worst = max(worst, angle)
        if angle > tolerance_deg:
            consistent = False
    return consistent, worst


def _distinct_positions(positions: Sequence[float], tolerance_mm: float) -> tuple[list[float], list[float]]:
    """Collapse sorted positions closer than ``tolerance_mm``; return (distinct, duplicated)."""
    distinct: list[float] = []
    duplicates: list[float] = []
    for z in positions:
        if distinct and z - distinct[-1] <= tolerance_mm:
            if not duplicates or duplicates[-1] != distinct[-1]:
                duplicates.append(distinct[-1])
            continue
        distinct.append(z)
    return distinct, duplicates


def _gap_report(
    distinct: Sequence[float], gaps: Sequence[float], spacing: float, tolerance: float
) -> tuple[bool, int, list[str]]:
    """Classify the gaps against the median spacing; return (uniform, missing slices, reasons)."""
    allowed = tolerance * spacing
    missing = 0
    missing_reasons: list[str] = []
    irregular_reasons: list[str] = []
    for index, gap in enumerate(gaps):
        if abs(gap - spacing) <= allowed:
            continue
        low, high = distinct[index], distinct[index + 1]
        where = f"between slices at z={_mm(low)} and z={_mm(high)} (spacing {_mm(spacing)} mm)"
        multiple = round(gap / spacing)
        if multiple >= 2 and abs(gap - multiple * spacing) <= allowed:
            missing += multiple - 1
            missing_reasons.append(f"gap of {_mm(gap)} mm {where}: about {_plural(multiple - 1, 'slice')} missing")
            continue
        estimate = math.floor(gap / spacing + tolerance) - 1
        if estimate >= 1:
            missing += estimate
            irregular_reasons.append(
                f"irregular gap of {_mm(gap)} mm {where}: about {_plural(estimate, 'slice')} missing"
            )
        else:
            irregular_reasons.append(f"irregular gap of {_mm(gap)} mm {where}")
    reasons = _listed(missing_reasons, "gaps with missing slices") + _listed(irregular_reasons, "irregular gaps")
    return not reasons, missing, reasons
