"""Density bands and tissue mass of a region, from the HU of its voxels, without weights.

Bands (:data:`models.findings.DENSITY_BAND_RANGES_HU`, where each edge's source is cited): every
voxel falls in exactly one of emphysema-like (below -950 HU), well aerated (-950 to -700 HU),
poorly aerated / ground-glass density (-700 to -250 HU), non-aerated / consolidation density
(-250 to +100 HU) and "other" (+100 HU and above: contrast-enhanced blood, calcification), each
band ``[low, high)``, so the bands of a region add up to the region.  A band is a densitometric
range, not a diagnosis: vessels, airway walls and fissures inside the lung mask are
non-aerated by density, and partial volume at every boundary puts voxels in the bands between.

Well-aerated reference: Colombi et al. (Radiology 2020;296:E86-E96; 236 patients with COVID-19
pneumonia at emergency admission) found that software-quantified well-aerated lung below 71 %
(-950 to -700 HU, with their open-source software) was associated with ICU admission or death,
odds ratio 3.8 (95 % CI 1.9-7.5).  :data:`WELL_AERATED_REFERENCE` says in words what that is
and is not; the number is set beside ours, never turned into a verdict.

Mass: tissue density is linear in HU between air (-1000 HU, 0 g/mL) and water (0 HU, 1 g/mL),
so the mass of a region is the sum over its voxels of ``(HU + 1000) / 1000`` g/mL times the
voxel volume (the CT density-to-tissue relation of Coxson et al., Am J Respir Crit Care Med
1999;159:851-856).  No voxel is left out or clipped: the sum over a region equals its volume
times ``(mean HU + 1000) / 1000``, so noise below -1000 HU cancels instead of biasing the mass
upwards; blood, vessels and lesions inside the mask are part of the mass, and contrast medium
raises it.
"""

from __future__ import annotations

import numpy as np

from models.findings import DENSITY_BAND_RANGES_HU, DENSITY_BANDS, BandVolume

__all__ = [
    "WELL_AERATED_CUTOFF_PCT",
    "WELL_AERATED_REFERENCE",
    "band_counts",
    "band_volumes",
    "mass_g",
]

#: Colombi et al., Radiology 2020;296:E86-E96: software-quantified well-aerated lung below 71 %
#: was associated with ICU admission or death (odds ratio 3.8, 95 % CI 1.9-7.5).
WELL_AERATED_CUTOFF_PCT = 71.0
#: What the cut-off is and is not, for every place that shows it beside our number.
WELL_AERATED_REFERENCE = (
    f"Reference, not a verdict: Colombi et al. (Radiology 2020;296:E86-E96) found in 236 patients with COVID-19 "
    f"pneumonia at emergency admission that well-aerated lung (-950 to -700 HU) below {WELL_AERATED_CUTOFF_PCT:g} % "
    "of the lungs, measured with their open-source software, was associated with ICU admission or death "
    "(odds ratio 3.8; 95 % CI 1.9-7.5). That is an association in one COVID-19 cohort with other software: it is "
    "not a diagnosis or a prognosis for this patient, and the cut-off has not been validated for this software."
)
#: Lower edges of the bands after the first, in HU (the first band is unbounded below).
_EDGES_HU = np.array([DENSITY_BAND_RANGES_HU[band][0] for band in DENSITY_BANDS[1:]], dtype=np.float64)


def band_counts(values: np.ndarray) -> dict[str, int]:
    """Number of values in each band of :data:`models.findings.DENSITY_BANDS`.

    Parameters
    ----------
    values : numpy.ndarray
        HU of a region's voxels, any shape and order.

    Returns
    -------
    dict of str to int
        Band name to count, in band order; the counts add up to ``values.size``.
    """
    index = np.searchsorted(_EDGES_HU, values.ravel(), side="right")
    counts = np.bincount(index, minlength=len(DENSITY_BANDS))
    return {band: int(counts[k]) for k, band in enumerate(DENSITY_BANDS)}


def band_volumes(counts: dict[str, int], voxel_ml: float) -> dict[str, BandVolume]:
    """Volume (mL) and share (% of the region) of each band, from :func:`band_counts`.

    The share is None for an empty region (a share of nothing does not exist).
    """
    total = sum(counts.values())
    return {
        band: BandVolume(volume_ml=n * voxel_ml, pct=100.0 * n / total if total else None) for band, n in counts.items()
    }


def mass_g(values: np.ndarray, voxel_ml: float) -> float:
    """Tissue mass (g) of the voxels with HU ``values``: sum of ``(HU + 1000) / 1000`` g/mL x voxel volume.

    Zero for no voxels.  See the module docstring for the source and for what it includes.
    """
    total_hu = float(np.sum(values, dtype=np.float64))
    return (total_hu + 1000.0 * values.size) / 1000.0 * voxel_ml
