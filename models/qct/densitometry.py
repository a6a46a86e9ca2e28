"""Weight-free zone densitometry of both lungs: zones, density bands, zone score, emphysema detail.

From the CT and the left and right lung masks alone (no trained weights, deterministic):

1. the zone regions (:mod:`models.qct.zones`): upper, middle and lower third of each lung, and
   the peripheral rind and core of both;
2. every zone region measured like a lung (:mod:`models.qct.measurements`): volume, functional
   volume, LAA-950, Perc15, mean HU, HAA, density bands (:mod:`models.qct.bands`) and mass;
3. the *weight-free density-based zone score*: each of the six zones scores 0-5 from the share of
   its volume that is poorly aerated or non-aerated (-700 to +100 HU, emphysema-like and
   well-aerated voxels and those above +100 HU left out), with the thresholds of Pan et al. as
   seed 003 gives them (0 none, 1 below 5 %, 2 5-25 %, 3 26-50 %, 4 51-75 %, 5 76-100 %; the
   boundaries as :func:`models.severity.ctss_from_involvement` resolves them), total 0-30.  It
   is named so everywhere and is never the lobar CT severity score (``Findings.severity``, from
   learned lobe and lesion masks): it counts density, not lesions, and vessels, airway walls,
   fissures, dependent atelectasis and partial volume at the lung border are in that range too,
   so a normal lung does not score 0;
4. the well-aerated share of both lungs beside the published cut-off of Colombi et al.
   (:data:`models.qct.bands.WELL_AERATED_REFERENCE`);
5. the upper/lower LAA ratio and the LAA cluster exponent D (:mod:`models.qct.emphysema`).
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from models.findings import (
    DENSITY_BAND_LABELS,
    ZONE_NAMES,
    Densitometry,
    EmphysemaDetail,
    RegionMeasurements,
    Volume,
    ZoneScore,
)
from models.qct.bands import WELL_AERATED_CUTOFF_PCT, WELL_AERATED_REFERENCE, band_counts
from models.qct.emphysema import (
    CLUSTER_EXPONENT_METHOD,
    UPPER_LOWER_RATIO_METHOD,
    cluster_exponent,
    upper_lower_ratio,
)
from models.qct.measurements import LAA_THRESHOLD_HU, measure_values
from models.qct.zones import RIND_METHOD, ZONES_METHOD, zone_map
from models.severity import ctss_from_involvement

__all__ = ["INVOLVED_BANDS", "ZONE_SCORE_METHOD", "analyse_densitometry", "zone_score"]

logger = logging.getLogger(__name__)

#: The bands a zone's involvement counts: poorly aerated and non-aerated (-700 to +100 HU).
INVOLVED_BANDS: tuple[str, ...] = ("poorly_aerated", "non_aerated")
#: The zone score in words.
ZONE_SCORE_METHOD = (
    "Weight-free density-based zone score (not the lobar CT severity score): each of the six zones scores 0-5 "
    "from the share of its volume at -700 to +100 HU (poorly aerated or non-aerated) with the thresholds of "
    "Pan et al. (0 none, 1 below 5 %, 2 5-25 %, 3 26-50 %, 4 51-75 %, 5 76-100 %); total 0-30. It counts "
    "density, not lesions: vessels, airway walls and partial volume at the lung border count too, so a normal "
    "lung does not score 0."
)
_BANDS_METHOD = "Density bands (each from its lower edge up to, not including, its upper edge): " + "; ".join(
    DENSITY_BAND_LABELS.values()
)
_MASS_METHOD = (
    "Lung mass: sum over the voxels of (HU + 1000) / 1000 g/mL x voxel volume (Coxson et al., Am J Respir Crit "
    "Care Med 1999;159:851-856), blood and lesions inside the mask included."
)


def zone_score(measurement: RegionMeasurements, voxel_ml: float) -> ZoneScore:
    """The weight-free density-based score (0-5) of one zone from its density bands.

    Parameters
    ----------
    measurement : RegionMeasurements
        The zone, with its density bands.
    voxel_ml : float
        Volume of one voxel (the band volumes are whole numbers of voxels).

    Returns
    -------
    ZoneScore
        Involvement (% of the zone's volume in :data:`INVOLVED_BANDS`) and score; both None for an
        empty zone.
    """
    if measurement.voxel_count == 0:
        return ZoneScore(volume_ml=0.0, involvement_pct=None, score=None)
    involved = sum(round(measurement.density_bands[band].volume_ml / voxel_ml) for band in INVOLVED_BANDS)
    involvement = 100.0 * involved / measurement.voxel_count
    return ZoneScore(
        volume_ml=measurement.volume_ml, involvement_pct=involvement, score=ctss_from_involvement(involvement)
    )


def analyse_densitometry(
    volume: Volume, left: np.ndarray, right: np.ndarray, source: str, notes: tuple[str, ...] = ()
) -> Densitometry:
    """Zones, their measurements and scores, the well-aerated share and the emphysema detail of both lungs.

    Parameters
    ----------
    volume : Volume
        The CT.
    left, right : numpy.ndarray
        Boolean ``[z, y, x]`` masks of the patient's left and right lung on ``volume``'s grid;
        they must not overlap, and together they must not be empty.
    source : str
        Name of the run that made the masks (``Findings.models``); its provenance applies.
    notes : tuple of str, optional
        Caveats to carry (e.g. that the lung mask failed the quality gate).

    Returns
    -------
    Densitometry
        See the module docstring.

    Raises
    ------
    ValueError
        If both masks are empty, or they overlap, are not boolean or not on the volume's grid.
    """
    geometry = volume.geometry
    zones = zone_map(geometry, left, right)
    lungs = zones.labels > 0
    if not lungs.any():
        raise ValueError("the lung masks are empty: there are no zones to measure")
    box = ndimage.find_objects(lungs.astype(np.uint8))[0]
    inside = lungs[box]
    hu = volume.hu[box]
    values = hu[inside]
    zone_of = zones.labels[box][inside]
    in_rind = zones.rind[box][inside]
    regions = {name: measure_values(values[zone_of == k], geometry, name) for k, name in enumerate(ZONE_NAMES, 1)}
    regions["core"] = measure_values(values[~in_rind], geometry, "core")
    regions["rind"] = measure_values(values[in_rind], geometry, "rind")
    voxel_ml = geometry.voxel_volume_ml
    scores = {name: zone_score(regions[name], voxel_ml) for name in ZONE_NAMES}
    all_notes = list(notes)
    empty = [name for name, score in scores.items() if score.score is None]
    if empty:
        all_notes.append(f"zone score total not computed: zones {', '.join(empty)} are empty (a lung is missing)")
    total = None if empty else sum(int(score.score or 0) for score in scores.values())
    well_aerated_pct = 100.0 * band_counts(values)["well_aerated"] / values.size
    ratio, ratio_note = upper_lower_ratio(regions)
    clusters = cluster_exponent(inside & (hu < LAA_THRESHOLD_HU), voxel_ml)
    emphysema = EmphysemaDetail(
        upper_lower_ratio=ratio,
        cluster_exponent_d=clusters.exponent_d,
        cluster_count=clusters.count,
        clusters_fitted=clusters.fitted,
        fit_range_ml=clusters.range_ml,
        notes=tuple(note for note in (ratio_note, clusters.note) if note),
    )
    logger.debug("zone scores %s, total %s, well aerated %.1f %%", scores, total, well_aerated_pct)
    return Densitometry(
        source=source,
        zone_map=zones,
        regions=regions,
        zone_scores=scores,
        zone_score_total=total,
        well_aerated_pct=well_aerated_pct,
        well_aerated_cutoff_pct=WELL_AERATED_CUTOFF_PCT,
        emphysema=emphysema,
        methods={
            "zones": ZONES_METHOD,
            "rind": RIND_METHOD,
            "density_bands": _BANDS_METHOD,
            "zone_score": ZONE_SCORE_METHOD,
            "well_aerated_reference": WELL_AERATED_REFERENCE,
            "upper_lower_ratio": UPPER_LOWER_RATIO_METHOD,
            "cluster_exponent": CLUSTER_EXPONENT_METHOD,
            "mass": _MASS_METHOD,
        },
        notes=tuple(all_notes),
    )
