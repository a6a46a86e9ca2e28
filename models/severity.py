"""Lesion involvement per lobe and the CT severity score (CTSS), from lobe and lesion masks.

The score follows seed paper 003 (Topff et al., "A deep learning-based application for COVID-19
diagnosis on CT: The Imaging COVID-19 AI initiative", PLOS ONE 2023), section "Segmentation
model", which takes it from Pan et al.: each of the five lobes scores 0-5 by the percentage of
the lobe that is involved, "[0] no involvement, [1] less than 5% involvement, [2] 5%-25%
involvement, [3] 26%-50% involvement, [4] 51%-75% involvement, and [5] 76%-100% involvement",
and the five scores add up to a total of 0 (no involvement) to 25 (maximum involvement).

The paper's bands are written for whole percentages and leave, for instance, 25.5 % between two
bands.  Here a percentage is a real number and every value has exactly one score, each band
including its upper end, so that the paper's integer boundaries land where it puts them:

========================  =====
involvement (% of lobe)   CTSS
========================  =====
exactly 0                 0
more than 0, below 5      1
5 to 25                   2
more than 25, up to 50    3
more than 50, up to 75    4
more than 75              5
========================  =====

Only an involvement of exactly zero scores 0: a single lesion voxel in a lobe is involvement.
Involvement is the lesion volume inside the lobe divided by the lobe's volume; lesion voxels
outside every lobe count for nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from models.findings import LOBE_NAMES, Geometry, SeverityResult

__all__ = ["CTSS_BANDS", "ctss_from_involvement", "severity_from_masks"]

logger = logging.getLogger(__name__)

#: Upper ends (inclusive, % of the lobe) of CTSS 1-4 after the zero score; above the last is 5.
#: Seed 003, "Segmentation model": <5 %, 5-25 %, 26-50 %, 51-75 %, 76-100 %.
CTSS_BANDS: tuple[float, ...] = (5.0, 25.0, 50.0, 75.0)


def ctss_from_involvement(involvement_pct: float) -> int:
    """The lobe's CT severity score (0-5) for the percentage of it that is involved.

    Parameters
    ----------
    involvement_pct : float
        Involved share of the lobe in percent, 0-100.

    Returns
    -------
    int
        0 only for exactly 0 %; 1 below 5 %; 2 from 5 % up to and including 25 %; 3 above 25 %
        up to 50 %; 4 above 50 % up to 75 %; 5 above 75 % (seed 003, "Segmentation model").

    Raises
    ------
    ValueError
        If the percentage is not a number in [0, 100].
    """
    if not 0.0 <= involvement_pct <= 100.0:
        raise ValueError(f"involvement must be a percentage in [0, 100], got {involvement_pct}")
    if involvement_pct == 0.0:
        return 0
    if involvement_pct < CTSS_BANDS[0]:
        return 1
    for score, upper in enumerate(CTSS_BANDS[1:], start=2):
        if involvement_pct <= upper:
            return score
    return 5


def severity_from_masks(lobes: Mapping[str, np.ndarray], lesions: np.ndarray, geometry: Geometry) -> SeverityResult:
    """Involvement and CT severity score of each lobe, and the total score.

    Parameters
    ----------
    lobes : mapping of str to numpy.ndarray
        A boolean ``[z, y, x]`` mask for each of :data:`models.findings.LOBE_NAMES` (other keys
        are ignored); lobes of one lung should not overlap, or a lesion voxel counts in both.
    lesions : numpy.ndarray
        Boolean mask of all lesions (the ``lesions`` mask: ground glass and consolidation).
    geometry : Geometry
        The grid of the masks (voxel volume for the millilitres reported).

    Returns
    -------
    SeverityResult
        ``lobes[name]`` holds ``involvement_pct`` (lesion volume in the lobe / lobe volume x 100),
        ``ctss`` (0-5, see :func:`ctss_from_involvement`), ``lesion_ml`` and ``volume_ml``;
        ``total_ctss`` is the sum over the five lobes, 0-25.

    Raises
    ------
    ValueError
        If a lobe is missing or empty, or a mask is not boolean or not on ``geometry``'s grid.
    """
    missing = [name for name in LOBE_NAMES if name not in lobes]
    if missing:
        raise ValueError(f"lobe masks missing: {missing}; the severity score needs all of {LOBE_NAMES}")
    shape = tuple(geometry.shape)
    for name, mask in (("lesions", lesions), *((name, lobes[name]) for name in LOBE_NAMES)):
        if tuple(mask.shape) != shape:
            raise ValueError(f"mask {name!r} has shape {mask.shape}, the grid is {shape}")
        if mask.dtype != np.bool_:
            raise ValueError(f"mask {name!r} must be boolean, got {mask.dtype}")
    voxel_ml = geometry.voxel_volume_ml
    per_lobe: dict[str, dict[str, float]] = {}
    for name in LOBE_NAMES:
        lobe_voxels = int(np.count_nonzero(lobes[name]))
        if lobe_voxels == 0:
            raise ValueError(f"lobe {name} is empty; its involvement is undefined")
        lesion_voxels = int(np.count_nonzero(lobes[name] & lesions))
        involvement = 100.0 * lesion_voxels / lobe_voxels
        per_lobe[name] = {
            "involvement_pct": involvement,
            "ctss": ctss_from_involvement(involvement),
            "lesion_ml": lesion_voxels * voxel_ml,
            "volume_ml": lobe_voxels * voxel_ml,
        }
    total = int(sum(int(values["ctss"]) for values in per_lobe.values()))
    logger.debug("CT severity score %d (%s)", total, ", ".join(f"{k} {v['ctss']:.0f}" for k, v in per_lobe.items()))
    return SeverityResult(lobes=per_lobe, total_ctss=total)
