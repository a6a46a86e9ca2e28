"""Weight-free attenuation measurements of a lung region: volume, functional volume, densitometry.

These numbers come from the CT itself and a mask, with no trained model, which is why the
reports may always show them.  Definitions:

- ``volume_ml``: voxels in the region times the voxel volume (thesis 2.4.3: "The PV was
  estimated by taking the volume of a lung mask").
- ``fpv_ml``, functional pulmonary volume: the volume of voxels in the region with HU in
  [-950, -500], both ends inclusive (thesis 2.4.3), which leaves out emphysema and air below
  and vessels, airway walls and dense lesions above.
- ``laa950_pct``: percentage of the region's voxels below -950 HU (low-attenuation area, the
  usual CT emphysema index; not from the thesis).
- ``perc15_hu``: the 15th percentile of HU in the region (another usual emphysema index; numpy's
  default linear interpolation between order statistics).
- ``mean_hu``: mean HU in the region.
- ``haa_pct``: percentage of voxels in [-600, -250] HU, inclusive (high-attenuation area: ground
  glass and reticulation; a usual interstitial-abnormality index, not from the thesis).
- ``density_bands``: volume and share of each density band (emphysema-like, well aerated, poorly
  aerated, non-aerated, above +100 HU), and ``mass_g``, the tissue mass from density; both are
  defined, with their sources, in :mod:`models.qct.bands`.

An empty region has a volume of 0 mL, a mass of 0 g, band volumes of 0 mL and ``None`` for every
share and attenuation value, with a note saying why:
an attenuation statistic of no voxels does not exist, and must never print as 0.

:func:`measure_regions` gives these numbers for both lungs, each lung and every lobe whose mask
is at hand.  They describe the attenuation of a region; counting voxels in a HU range (HAA, for
instance) is a densitometric index, not a segmentation of lesions, and is never reported as one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from models.findings import REGION_NAMES, Geometry, RegionMeasurements, Volume
from models.qct.bands import band_counts, band_volumes, mass_g

__all__ = [
    "FPV_RANGE_HU",
    "HAA_RANGE_HU",
    "LAA_THRESHOLD_HU",
    "PERCENTILE",
    "measure_lungs",
    "measure_region",
    "measure_regions",
    "measure_values",
]

logger = logging.getLogger(__name__)

#: Thesis section 2.4.3: functional pulmonary volume counts voxels with HU in [-950, -500].
FPV_RANGE_HU: tuple[float, float] = (-950.0, -500.0)
#: Low-attenuation (emphysema) threshold: voxels strictly below -950 HU.
LAA_THRESHOLD_HU = -950.0
#: High-attenuation area: voxels with HU in [-600, -250].
HAA_RANGE_HU: tuple[float, float] = (-600.0, -250.0)
#: Percentile of the "Perc15" density index.
PERCENTILE = 15.0


def measure_values(values: np.ndarray, geometry: Geometry, region: str) -> RegionMeasurements:
    """Measurements of a region given the HU values of its voxels (1-D, any order).

    Parameters
    ----------
    values : numpy.ndarray
        HU of every voxel of the region, once each.
    geometry : Geometry
        The grid the voxels come from (for the voxel volume).
    region : str
        Name of the region.

    Returns
    -------
    RegionMeasurements
        See the module docstring for the definitions.
    """
    count = int(values.size)
    volume_ml = count * geometry.voxel_volume_ml
    bands = band_volumes(band_counts(values), geometry.voxel_volume_ml)
    if count == 0:
        return RegionMeasurements(
            region=region,
            voxel_count=0,
            volume_ml=0.0,
            fpv_ml=None,
            laa950_pct=None,
            perc15_hu=None,
            mean_hu=None,
            haa_pct=None,
            note=f"region {region!r} is empty (no voxels in its mask); attenuation values do not exist",
            density_bands=bands,
            mass_g=0.0,
        )
    low, high = FPV_RANGE_HU
    functional = int(np.count_nonzero((values >= low) & (values <= high)))
    emphysema = int(np.count_nonzero(values < LAA_THRESHOLD_HU))
    haa_low, haa_high = HAA_RANGE_HU
    dense = int(np.count_nonzero((values >= haa_low) & (values <= haa_high)))
    return RegionMeasurements(
        region=region,
        voxel_count=count,
        volume_ml=float(volume_ml),
        fpv_ml=float(functional * geometry.voxel_volume_ml),
        laa950_pct=100.0 * emphysema / count,
        perc15_hu=float(np.percentile(values, PERCENTILE)),
        mean_hu=float(np.mean(values, dtype=np.float64)),
        haa_pct=100.0 * dense / count,
        density_bands=bands,
        mass_g=mass_g(values, geometry.voxel_volume_ml),
    )


def measure_region(hu: np.ndarray, mask: np.ndarray, geometry: Geometry, region: str) -> RegionMeasurements:
    """Volume, functional volume and densitometry of one masked region.

    Parameters
    ----------
    hu : numpy.ndarray
        ``[z, y, x]`` Hounsfield units.
    mask : numpy.ndarray
        Boolean ``[z, y, x]`` region on the same grid.
    geometry : Geometry
        The grid's geometry (for the voxel volume).
    region : str
        Name of the region, e.g. ``"lung_left"``.

    Returns
    -------
    RegionMeasurements
        See the module docstring for the definitions.

    Raises
    ------
    ValueError
        If the mask is not boolean or the shapes of ``hu``, ``mask`` and ``geometry`` differ.
    """
    if mask.dtype != np.bool_:
        raise ValueError(f"mask of {region!r} must be boolean, got {mask.dtype}")
    if hu.shape != mask.shape or tuple(hu.shape) != tuple(geometry.shape):
        raise ValueError(f"shapes differ for {region!r}: hu {hu.shape}, mask {mask.shape}, geometry {geometry.shape}")
    return measure_values(hu[mask], geometry, region)


def measure_regions(volume: Volume, masks: Mapping[str, np.ndarray]) -> dict[str, RegionMeasurements]:
    """Measurements of both lungs, each lung and every lobe given.

    Parameters
    ----------
    volume : Volume
        The CT.
    masks : mapping of str to numpy.ndarray
        Boolean ``[z, y, x]`` masks on ``volume``'s grid: ``"lung_left"`` and ``"lung_right"``
        (required; they must not overlap, so that ``"lungs"``, their union, counts no voxel
        twice), and any of the lobes of :data:`models.findings.LOBE_NAMES`.  ``"lungs"`` may be
        given too, but must then equal the union of the two lungs.

    Returns
    -------
    dict of str to RegionMeasurements
        ``"lungs"``, ``"lung_left"``, ``"lung_right"`` and the lobes given, in the order of
        :data:`models.findings.REGION_NAMES`.

    Raises
    ------
    ValueError
        If a lung is missing, a name is not a region name (a lesion mask, for example: lesions
        are not measured as regions here), the lungs overlap or ``"lungs"`` is not their union,
        or a mask is not boolean or not on the volume's grid.
    """
    unknown = sorted(set(masks) - set(REGION_NAMES))
    if unknown:
        raise ValueError(f"not region names: {unknown}; expected names from {REGION_NAMES}")
    missing = [name for name in ("lung_left", "lung_right") if name not in masks]
    if missing:
        raise ValueError(f"masks of {missing} are required")
    left, right = masks["lung_left"], masks["lung_right"]
    if left.shape != right.shape:
        raise ValueError(f"left and right masks differ in shape: {left.shape} vs {right.shape}")
    overlap = int(np.count_nonzero(left & right))
    if overlap:
        raise ValueError(f"left and right lung masks overlap in {overlap} voxels")
    lungs = left | right
    if "lungs" in masks and not np.array_equal(masks["lungs"], lungs):
        raise ValueError("the 'lungs' mask differs from the union of 'lung_left' and 'lung_right'")
    regions = {"lungs": lungs, **{name: mask for name, mask in masks.items() if name != "lungs"}}
    result = {
        name: measure_region(volume.hu, regions[name], volume.geometry, name)
        for name in REGION_NAMES
        if name in regions
    }
    logger.debug("measured %s", ", ".join(f"{k}: {v.volume_ml:.0f} mL" for k, v in result.items()))
    return result


def measure_lungs(volume: Volume, left: np.ndarray, right: np.ndarray) -> dict[str, RegionMeasurements]:
    """Measurements of both lungs together and of each lung (:func:`measure_regions` without lobes).

    Parameters
    ----------
    volume : Volume
        The CT.
    left, right : numpy.ndarray
        Boolean masks of the patient's left and right lung; they must not overlap, so that
        ``lungs`` is their union and no voxel is counted twice.

    Returns
    -------
    dict of str to RegionMeasurements
        Keys ``"lungs"``, ``"lung_left"``, ``"lung_right"`` (:data:`models.findings.LUNG_REGIONS`).
    """
    return measure_regions(volume, {"lung_left": left, "lung_right": right})
