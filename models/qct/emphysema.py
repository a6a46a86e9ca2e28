"""Where the low-attenuation (emphysema-like) voxels lie, and how they cluster, without weights.

Upper/lower ratio (heterogeneity, as lung-volume-reduction planning looks at it): the LAA-950 of
the two upper zones pooled (low-attenuation volume of RU and LU over the volume of RU and LU)
divided by that of the two lower zones pooled (RL and LL).  Pooling weights each lung by its
volume, so a small lung does not count as much as a large one.  Above 1: upper-zone predominant;
below 1: lower-zone predominant.  It describes where low-attenuation voxels are, which, when
there are few of them, is mostly where the noise is.

Cluster exponent D (Mishima et al., "Complexity of terminal airspace geometry assessed by lung
computed tomography in normal subjects and patients with chronic obstructive pulmonary
disease", PNAS 1999;96:8829-8834): the cumulative size distribution of low-attenuation clusters,
Y(>= s), the number of clusters of size s or larger, follows a power law Y = K s^-D; a smaller D
means relatively more large clusters (small clusters coalescing as in early emphysema).  Mishima
et al. worked on 2-D clusters per slice; here the clusters are 3-D:

- clusters: 6-connected (face-sharing) components of voxels below -950 HU inside both lungs;
  face connectivity, because two low-attenuation voxels that touch only at an edge or a corner
  share no airspace wall on the grid and would otherwise chain noise voxels together;
- sizes in mL (voxel count x voxel volume); D does not depend on the unit;
- fit: least squares of log10 Y on log10 s over the distinct cluster sizes s of at least
  :data:`MIN_CLUSTER_VOXELS` voxels (a single low-attenuation voxel is as likely noise as
  airspace) with at least :data:`MIN_CLUSTERS_AT_OR_ABOVE` clusters of that size or larger (the
  sparse tail of the few largest clusters is counting noise); D is minus the slope;
- at least :data:`MIN_FIT_POINTS` distinct sizes are needed, otherwise D is None and says why.

D depends on the voxel size and on the noise (slice thickness, kernel, dose) even more than
LAA-950 does, so it is comparable only between scans reconstructed alike.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from models.findings import RegionMeasurements

__all__ = [
    "CLUSTER_EXPONENT_METHOD",
    "MIN_CLUSTERS_AT_OR_ABOVE",
    "MIN_CLUSTER_VOXELS",
    "MIN_FIT_POINTS",
    "UPPER_LOWER_RATIO_METHOD",
    "ClusterFit",
    "cluster_exponent",
    "upper_lower_ratio",
]

logger = logging.getLogger(__name__)

#: Smallest cluster (voxels) in the fit.
MIN_CLUSTER_VOXELS = 2
#: Fewest clusters at or above a size for that size to be a point of the fit.
MIN_CLUSTERS_AT_OR_ABOVE = 5
#: Fewest distinct cluster sizes for a fit.
MIN_FIT_POINTS = 3
#: The upper/lower ratio in words.
UPPER_LOWER_RATIO_METHOD = (
    "Upper/lower LAA ratio: LAA-950 of both upper zones pooled (RU+LU) divided by LAA-950 of both lower zones "
    "pooled (RL+LL); above 1 upper-zone predominant."
)
#: D in words.
CLUSTER_EXPONENT_METHOD = (
    "Cluster exponent D (Mishima et al., PNAS 1999;96:8829-34, here in 3-D): minus the slope of log number of "
    f"clusters of at least a size against log size, over 6-connected clusters below -950 HU of at least "
    f"{MIN_CLUSTER_VOXELS} voxels and sizes with at least {MIN_CLUSTERS_AT_OR_ABOVE} clusters at or above them; "
    "smaller D, relatively more large clusters."
)
#: Face connectivity in 3-D.
_SIX_CONNECTED = ndimage.generate_binary_structure(3, 1)


@dataclass(frozen=True)
class ClusterFit:
    """The low-attenuation clusters of both lungs and the power-law fit of their sizes.

    ``exponent_d`` is None when there are too few distinct sizes (``note`` says why);
    ``fitted`` counts the clusters whose sizes lie in ``range_ml``.
    """

    exponent_d: float | None
    count: int
    fitted: int
    range_ml: tuple[float, float] | None
    note: str = ""


def cluster_exponent(low_attenuation: np.ndarray, voxel_ml: float) -> ClusterFit:
    """D of the cumulative size distribution of the 6-connected clusters of ``low_attenuation``.

    Parameters
    ----------
    low_attenuation : numpy.ndarray
        Boolean ``[z, y, x]``: voxels of both lungs below -950 HU (any crop that holds them all).
    voxel_ml : float
        Volume of one voxel, mL.

    Returns
    -------
    ClusterFit
        See the module docstring for the definition and the fitted range.
    """
    labels, count = ndimage.label(low_attenuation, structure=_SIX_CONNECTED)
    sizes = np.bincount(labels.ravel())[1:]
    candidates = np.sort(sizes[sizes >= MIN_CLUSTER_VOXELS])
    distinct = np.unique(candidates)
    at_or_above = candidates.size - np.searchsorted(candidates, distinct, side="left")
    keep = at_or_above >= MIN_CLUSTERS_AT_OR_ABOVE
    points_s, points_y = distinct[keep], at_or_above[keep]
    if points_s.size < MIN_FIT_POINTS:
        note = (
            f"cluster exponent D not computed: {count} low-attenuation clusters give {points_s.size} distinct sizes "
            f"of at least {MIN_CLUSTER_VOXELS} voxels with {MIN_CLUSTERS_AT_OR_ABOVE} or more clusters at or above "
            f"them; a power-law fit needs at least {MIN_FIT_POINTS}"
        )
        return ClusterFit(exponent_d=None, count=int(count), fitted=0, range_ml=None, note=note)
    x = np.log10(points_s.astype(np.float64) * voxel_ml)
    y = np.log10(points_y.astype(np.float64))
    slope = float(np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2))
    smallest, largest = int(points_s[0]), int(points_s[-1])
    fitted = int(np.count_nonzero((sizes >= smallest) & (sizes <= largest)))
    logger.debug("LAA clusters: %d, D %.3f over %d-%d voxels", count, -slope, smallest, largest)
    return ClusterFit(
        exponent_d=-slope,
        count=int(count),
        fitted=fitted,
        range_ml=(smallest * voxel_ml, largest * voxel_ml),
    )


def _pooled_laa_pct(regions: Mapping[str, RegionMeasurements], names: tuple[str, str]) -> float | None:
    """LAA-950 (%) of the pooled volume of two zones, None when they are empty or not measured."""
    parts = [regions[name] for name in names if name in regions]
    volume = sum(m.volume_ml for m in parts)
    if len(parts) != len(names) or volume == 0.0:
        return None
    low = sum(m.density_bands["emphysema"].volume_ml for m in parts)
    return 100.0 * low / volume


def upper_lower_ratio(regions: Mapping[str, RegionMeasurements]) -> tuple[float | None, str]:
    """Pooled LAA-950 of the upper zones over that of the lower zones, and why it is None when it is.

    Parameters
    ----------
    regions : mapping of str to RegionMeasurements
        Measurements of the zones ``RU``, ``LU``, ``RL``, ``LL`` with their density bands.

    Returns
    -------
    (float or None, str)
        The ratio, and a note ("" when it exists).
    """
    upper = _pooled_laa_pct(regions, ("RU", "LU"))
    lower = _pooled_laa_pct(regions, ("RL", "LL"))
    if upper is None or lower is None:
        return None, "upper/lower LAA ratio not computed: an upper or lower zone is empty or missing"
    if lower == 0.0:
        return None, "upper/lower LAA ratio not computed: no voxel below -950 HU in the lower zones"
    return upper / lower, ""
