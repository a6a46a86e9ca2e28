"""Image coordinates in the SR: each lung outlined on the axial density key slice (TID 1410).

Why
---
The region groups of the SR are volumes (TID 1411) that reference their SEG segment; they carry
no image coordinates, and viewers that list only measurements with coordinates (OHIF's
measurement panel, reported in OHIF issues #3390 and #2325) show nothing of them.  The finding
does have a natural place in the image: the axial key slice the PDF, the key-image Secondary
Capture and the Key Object Selection show first (:func:`reports.keyimages.select_density_slice`).
So each lung present on that slice gets one Planar ROI group: a closed POLYLINE around the lung
on that source CT image (SCOORD, Image Region, PS3.3 C.18.6), and what lies inside it on that
slice: its area, mean attenuation, the share below -950 HU and the share poorly or non-aerated
(-700 to +100 HU), the numbers the key image colours.  They are measurements of one slice,
named so ("Area fraction ... on the slice"), never the lung's volumetric values.

Which outline
-------------
A lung can be cut into several parts on one slice; a TID 1410 group has one region.  The outline
is that of the lung's largest part on the slice with its holes filled (an outline of its outer
border), found by marching squares at the mask's half level (scikit-image ``find_contours``,
through ``lungmask``'s dependencies) and simplified to within a quarter pixel.  The
measurements are of the lung voxels inside that outline, so what is drawn is what is measured.
Coordinates are image pixel coordinates of the source image, column then row, the top left
corner of the first pixel being (0, 0) (PS3.3 C.18.6.1.1); the volume keeps the source's
in-plane pixel order (as the SEG frames do, :mod:`reports.seg`).
"""

from __future__ import annotations

import numpy as np
from highdicom.sr import (
    AlgorithmIdentification,
    FindingSite,
    GraphicTypeValues,
    ImageRegion,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    SourceImageForRegion,
)
from pydicom import Dataset
from scipy import ndimage
from skimage.measure import approximate_polygon, find_contours

from models.findings import REGION_LABELS, Findings
from reports import codes
from reports.identity import ReportContext
from reports.keyimages import INVOLVED_BANDS, band_mask, select_density_slice
from reports.precision import PRECISION
from reports.sr_content import GroupContent, add_texts, on_mask, tracking_identifier

__all__ = ["KEY_SLICE_LUNGS", "key_slice_groups", "lung_outline"]

#: The regions outlined on the key slice, in the order of their groups.
KEY_SLICE_LUNGS: tuple[str, ...] = ("lung_right", "lung_left")
#: Largest distance (pixels) of the simplified outline from the marching-squares one.
OUTLINE_TOLERANCE_PX = 0.25


def lung_outline(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The outer border of the largest part of ``plane`` (a boolean ``[row, column]`` mask) and the
    mask pixels inside it; None when the plane is empty.

    Returns
    -------
    tuple of (numpy.ndarray, numpy.ndarray) or None
        The closed polyline as ``(column, row)`` image coordinates (first point repeated last), and
        the boolean mask of the plane's pixels inside it.
    """
    labels, count = ndimage.label(plane, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    part = labels == int(sizes.argmax()) + 1
    filled = ndimage.binary_fill_holes(part)
    contours = find_contours(np.pad(filled, 1).astype(np.float32), 0.5)  # type: ignore[no-untyped-call]
    border = max(contours, key=len) - 1.0  # undo the padding; (row, column) of pixel centres
    border = approximate_polygon(border, tolerance=OUTLINE_TOLERANCE_PX)  # type: ignore[no-untyped-call]
    points = border[:, ::-1] + 0.5  # (column, row), pixel centre of the first pixel at (0.5, 0.5)
    if not np.array_equal(points[0], points[-1]):
        points = np.vstack([points, points[:1]])
    return points.astype(np.float32), plane & filled


def _group(
    name: str,
    findings: Findings,
    k: int,
    source: Dataset,
    context: ReportContext,
    series_uid: str,
) -> PlanarROIMeasurementsAndQualitativeEvaluations | None:
    """The Planar ROI group of lung ``name`` on slice ``k``; None when the lung is not on it."""
    mask_run = findings.mask_run(name)
    outline = lung_outline(findings.masks[name][k])
    if outline is None or mask_run is None:
        return None
    points, inside = outline
    hu = findings.volume.hu[k][inside]
    _, row_mm, column_mm = findings.volume.geometry.spacing
    version = findings.pipeline_version
    algorithm = AlgorithmIdentification(
        name=codes.DENSITOMETRY_ALGORITHM,
        version=version,
        manufacturer=context.manufacturer,
        parameters=[on_mask(mask_run), f"axial slice {k + 1}, inside the outline of the largest part"],
    )
    involved = np.logical_or.reduce([band_mask(hu, band) for band in INVOLVED_BANDS])
    content = GroupContent()
    content.provenance(f"{REGION_LABELS[name]} mask", mask_run)
    content.measure(codes.AREA, hu.size * row_mm * column_mm / 100.0, codes.UCUM_SQUARE_CENTIMETER, algorithm, 1)
    content.measure(
        codes.ATTENUATION_COEFFICIENT,
        float(hu.mean()),
        codes.UCUM_HOUNSFIELD_UNIT,
        algorithm,
        PRECISION["hu"],
        derivation=codes.MEAN,
    )
    content.measure(
        codes.SLICE_LAA_950,
        100.0 * float(np.mean(band_mask(hu, "emphysema"))),
        codes.UCUM_PERCENT,
        algorithm,
        PRECISION["percent"],
    )
    content.measure(
        codes.SLICE_INVOLVEMENT, 100.0 * float(np.mean(involved)), codes.UCUM_PERCENT, algorithm, PRECISION["percent"]
    )
    site = codes.REGION_CODES[name]
    where = f"{name} on axial key slice {k + 1} of {findings.volume.geometry.shape[0]}"
    group = PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking_identifier(context, series_uid, version, where),
        referenced_region=ImageRegion(
            graphic_type=GraphicTypeValues.POLYLINE,
            graphic_data=points,
            source_image=SourceImageForRegion.from_source_image(source),
        ),
        finding_category=codes.ANATOMICAL_STRUCTURE,
        finding_type=site,
        finding_sites=[FindingSite(site)],
        algorithm_id=algorithm,
        measurements=content.measurements,
        qualitative_evaluations=content.coded or None,
    )
    add_texts(group, content.texts)
    return group


def key_slice_groups(
    findings: Findings, by_uid: dict[str, Dataset], context: ReportContext, series_uid: str
) -> list[PlanarROIMeasurementsAndQualitativeEvaluations]:
    """One TID 1410 group per lung present on the axial density key slice (none without densitometry).

    ``by_uid`` holds the source headers by SOP Instance UID
    (:func:`reports.identity.index_source_headers`).
    """
    d = findings.densitometry
    if d is None:
        return []
    k, _ = select_density_slice(findings, d)
    source = by_uid[findings.volume.source_sop_instance_uids[k]]
    groups = [
        _group(name, findings, k, source, context, series_uid) for name in KEY_SLICE_LUNGS if name in findings.masks
    ]
    return [group for group in groups if group is not None]
