"""Weight-free zones of the lungs: upper, middle and lower thirds of each lung, peripheral rind and core.

Thirds (``RU``, ``RM``, ``RL``, ``LU``, ``LM``, ``LL``; :data:`models.findings.ZONE_NAMES`): each
lung is cut at equal thirds of its own cranio-caudal extent along the patient's head-foot axis
(DICOM LPS z, + towards the head).  The extent runs from the outer face of the lowest to that of
the highest voxel of that lung, and a voxel belongs to the third that holds its centre (a centre
exactly on a cut belongs to the zone above).  This is the geometric split of zone-based
densitometry, not an anatomic one: visual six-zone scores that use landmarks (the carina, the
inferior pulmonary veins) put the boundaries elsewhere, and a weight-free method finds no such
landmark reliably.  Equal height rather than equal volume, so that a zone's boundaries do not
move when disease changes the volume of another part of the lung (a collapsed lower lobe would
push equal-volume boundaries down), which keeps zones comparable at follow-up.  Each lung has its
own cuts (the right dome is usually higher); both lungs' cuts are reported.

Rind and core (:data:`models.findings.SHELL_NAMES`), for both lungs together: the rind is every
lung voxel whose centre lies within :data:`models.findings.RIND_THICKNESS_MM` of the centre of
the nearest voxel outside both lungs (exact Euclidean distance in mm on the anisotropic grid);
the core is the rest of the lungs.  The lung surface is every surface of the mask: costal,
mediastinal, diaphragmatic and hilar; where the lungs are cut at the edge of the field of view
there is no surface, and no rind.  Because the distance is taken to the nearest outside voxel
centre, which lies half a voxel beyond the surface, the rind reaches up to half a voxel less deep
than its nominal thickness (at most 2.5 mm less across 5 mm slices).
"""

from __future__ import annotations

import logging

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from models.findings import RIND_THICKNESS_MM, ZONE_NAMES, Geometry, ZoneMap

__all__ = ["RIND_METHOD", "ZONES_METHOD", "zone_map"]

logger = logging.getLogger(__name__)

#: The thirds in words, for the reports to print verbatim.
ZONES_METHOD = (
    "Zones: each lung cut into upper, middle and lower thirds of equal height along the head-foot axis "
    "(from its lowest to its highest voxel); geometric, not anatomic boundaries."
)
#: The rind in words.
RIND_METHOD = (
    f"Peripheral rind: lung voxels within {RIND_THICKNESS_MM:g} mm of the nearest voxel outside both lungs "
    "(costal, mediastinal, diaphragmatic and hilar surfaces); core: the rest of the lungs."
)
#: Distances this close to the rind thickness count as within it (float32 distances of the grid).
_DISTANCE_TOLERANCE_MM = 1e-4
#: Zone label of the upper, middle and lower third of each lung (1-based index into ZONE_NAMES).
_LUNG_ZONES: dict[str, tuple[int, int, int]] = {
    "lung_right": (ZONE_NAMES.index("RU") + 1, ZONE_NAMES.index("RM") + 1, ZONE_NAMES.index("RL") + 1),
    "lung_left": (ZONE_NAMES.index("LU") + 1, ZONE_NAMES.index("LM") + 1, ZONE_NAMES.index("LL") + 1),
}


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Index box of a non-empty mask, widened by ``margin`` voxels where the array allows."""
    box = ndimage.find_objects(mask.astype(np.uint8, copy=False))[0]
    return tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, mask.shape, strict=True))


def _patient_z(geometry: Geometry, box: tuple[slice, ...]) -> tuple[np.ndarray, float]:
    """Patient-space z (mm) of the voxel centres in ``box`` (broadcastable to the box), and half a voxel's z extent."""
    direction = np.asarray(geometry.direction, dtype=np.float64)
    sz, sy, sx = geometry.spacing
    per_index = (direction[2, 2] * sz, direction[2, 1] * sy, direction[2, 0] * sx)
    axes = [
        np.arange(s.start, s.stop, dtype=np.float64).reshape([-1 if a == axis else 1 for a in range(3)]) * step
        for axis, (s, step) in enumerate(zip(box, per_index, strict=True))
    ]
    z: np.ndarray = geometry.origin[2] + axes[0] + axes[1] + axes[2]
    return z, 0.5 * float(sum(abs(step) for step in per_index))


def _thirds(
    lung: np.ndarray, z: np.ndarray, half_extent: float, labels: np.ndarray, zones: tuple[int, int, int]
) -> tuple[float, float]:
    """Write the upper, middle and lower zone labels of one lung (cropped arrays); return its two cuts (mm)."""
    z_lung = np.broadcast_to(z, lung.shape)[lung]
    bottom = float(z_lung.min()) - half_extent
    height = float(z_lung.max()) + half_extent - bottom
    low_cut, high_cut = bottom + height / 3.0, bottom + 2.0 * height / 3.0
    upper, middle, lower = zones
    labels[lung] = np.where(z_lung >= high_cut, upper, np.where(z_lung >= low_cut, middle, lower)).astype(np.uint8)
    return low_cut, high_cut


def _rind(lungs: np.ndarray, spacing: tuple[float, float, float], thickness_mm: float) -> np.ndarray:
    """Lung voxels within ``thickness_mm`` of the centre of the nearest voxel outside ``lungs`` (cropped array).

    The squared distance of every lung voxel to the nearest non-lung voxel centre is the signed
    Maurer distance map of the non-lung voxels (exact Euclidean, voxel spacing in mm).
    """
    outside = sitk.GetImageFromArray((~lungs).astype(np.uint8))
    outside.SetSpacing((spacing[2], spacing[1], spacing[0]))  # type: ignore[no-untyped-call]
    distance = sitk.SignedMaurerDistanceMap(  # type: ignore[no-untyped-call]
        outside, insideIsPositive=False, squaredDistance=True, useImageSpacing=True
    )
    squared = sitk.GetArrayViewFromImage(distance)
    limit = (thickness_mm + _DISTANCE_TOLERANCE_MM) ** 2
    rind: np.ndarray = lungs & (squared <= limit)
    return rind


def zone_map(geometry: Geometry, left: np.ndarray, right: np.ndarray, rind_mm: float = RIND_THICKNESS_MM) -> ZoneMap:
    """The thirds of each lung and the peripheral rind of both.

    Parameters
    ----------
    geometry : Geometry
        The grid of the masks (spacing in mm, direction for the patient's head-foot axis).
    left, right : numpy.ndarray
        Boolean ``[z, y, x]`` masks of the patient's left and right lung; they must not overlap.
    rind_mm : float, optional
        Thickness of the rind, mm (default :data:`models.findings.RIND_THICKNESS_MM`).

    Returns
    -------
    ZoneMap
        Zone labels (every lung voxel in exactly one third of its own lung), the rind, and the
        cuts of each lung that is not empty.

    Raises
    ------
    ValueError
        If the masks are not boolean, not on ``geometry``'s grid, or overlap.
    """
    shape = tuple(geometry.shape)
    for name, mask in (("left", left), ("right", right)):
        if mask.dtype != np.bool_ or tuple(mask.shape) != shape:
            raise ValueError(f"the {name} lung mask must be boolean on the grid {shape}, got {mask.dtype} {mask.shape}")
    if np.any(left & right):
        raise ValueError("the left and right lung masks overlap")
    labels = np.zeros(shape, dtype=np.uint8)
    rind = np.zeros(shape, dtype=bool)
    lungs = left | right
    if not lungs.any():
        return ZoneMap(labels=labels, rind=rind, rind_mm=rind_mm, cuts_mm={})
    box = _bounding_box(lungs, margin=1)
    z, half_extent = _patient_z(geometry, box)
    cuts: dict[str, tuple[float, float]] = {}
    for lung_name, mask in (("lung_right", right), ("lung_left", left)):
        cropped = mask[box]
        if cropped.any():
            cuts[lung_name] = _thirds(cropped, z, half_extent, labels[box], _LUNG_ZONES[lung_name])
    rind[box] = _rind(lungs[box], geometry.spacing, rind_mm)
    logger.debug("zones: cuts %s mm, rind %d voxels", cuts, int(np.count_nonzero(rind)))
    return ZoneMap(labels=labels, rind=rind, rind_mm=rind_mm, cuts_mm=cuts)
