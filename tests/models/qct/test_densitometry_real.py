"""models.qct.densitometry on the shared real series: bookkeeping that must hold exactly, and a painted lesion.

On each real chest series (skipped with the reason when ../shared/data is absent) the classical
lung mask is made once per series (module-scoped fixture), then:

- the six zones partition the lungs (voxel counts add up exactly, each lung's three zones make
  that lung), core + rind make the lungs, the bands of every region add up to the region, and
  left + right make the lungs (volume, every band, mass);
- a second run, segmentation included, gives a bit-identical result;
- a dense lesion (a 40 HU ball of 20 mm diameter) painted into the most interior point of one
  zone raises that zone's non-aerated band by the ball's volume within the partial-volume
  tolerance derived in :func:`test_painted_lesion_raises_exactly_its_zone`, and changes no other
  zone's bands at all.  It replaces lung voxels only, and it is measured on the unpainted mask,
  so only the HU change (the test also checks what the segmentation makes of the painted CT).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

from models.findings import DENSITY_BANDS, ZONE_NAMES, ZONE_REGIONS, Densitometry, RegionMeasurements, Volume
from models.qct.densitometry import analyse_densitometry
from models.qct.lungmask import LungSegmentation, segment_lungs
from models.qct.measurements import measure_regions
from models.volume import load_series

#: (series folder, zone the lesion is painted into): zones away from each series' known tumour.
SERIES = (
    ("lung-dx-a0001-chest-5mm-s2", "RM"),
    ("lung-dx-a0001-chest-5mm-s3", "LM"),
    ("lung-dx-a0002-thorax-8mm-b40f", "LU"),
)
LESION_HU = 40.0
LESION_RADIUS_MM = 10.0
#: Sub-samples per axis for a voxel's share of the ball.
SUPERSAMPLING = 8
SOURCE = "classical_lung_mask"


@dataclass(frozen=True)
class Case:
    """One real series, its lung mask, its densitometry and its lung measurements."""

    name: str
    zone: str
    volume: Volume
    lungs: LungSegmentation
    result: Densitometry
    measured: dict[str, RegionMeasurements]


@pytest.fixture(scope="module", params=SERIES, ids=[s[0] for s in SERIES])
def case(request: pytest.FixtureRequest, real_series: Callable[[str], list[Path]]) -> Iterator[Case]:
    name, zone = request.param
    volume = load_series(real_series(name))
    lungs = segment_lungs(volume)
    masks = {"lungs": lungs.left | lungs.right, "lung_left": lungs.left, "lung_right": lungs.right}
    yield Case(
        name=name,
        zone=zone,
        volume=volume,
        lungs=lungs,
        result=analyse_densitometry(volume, lungs.left, lungs.right, SOURCE),
        measured=measure_regions(volume, masks),
    )


def _band_counts(m: RegionMeasurements, voxel_ml: float) -> dict[str, int]:
    return {band: round(v.volume_ml / voxel_ml) for band, v in m.density_bands.items()}


def _as_dict(result: Densitometry) -> dict[str, Any]:
    """Everything a run reports, as plain values (for a bit-for-bit comparison)."""
    return {
        "regions": {name: m.as_dict() for name, m in result.regions.items()},
        "zones": result.zones_dict(),
        "emphysema": result.emphysema_dict(None),
    }


def test_zones_partition_the_lungs(case: Case) -> None:
    r, lungs = case.result.regions, case.lungs
    left, right = int(np.count_nonzero(lungs.left)), int(np.count_nonzero(lungs.right))
    assert left > 0 and right > 0
    assert sum(r[n].voxel_count for n in ZONE_NAMES) == left + right
    assert r["RU"].voxel_count + r["RM"].voxel_count + r["RL"].voxel_count == right
    assert r["LU"].voxel_count + r["LM"].voxel_count + r["LL"].voxel_count == left
    assert r["core"].voxel_count + r["rind"].voxel_count == left + right
    labels = case.result.zone_map.labels
    np.testing.assert_array_equal(labels > 0, lungs.left | lungs.right)
    assert set(np.unique(labels[lungs.right]).tolist()) == {1, 2, 3}
    assert set(np.unique(labels[lungs.left]).tolist()) == {4, 5, 6}
    assert all(r[n].voxel_count > 0 for n in ZONE_REGIONS)


def test_bands_add_up_to_every_region(case: Case) -> None:
    voxel_ml = case.volume.geometry.voxel_volume_ml
    regions = {**case.result.regions, **case.measured}
    for name, m in regions.items():
        counts = _band_counts(m, voxel_ml)
        assert sum(counts.values()) == m.voxel_count, name
        assert all(n >= 0 for n in counts.values())
    # two code paths agree: the zones' bands add up to the bands of both lungs measured as one region
    lungs = _band_counts(case.measured["lungs"], voxel_ml)
    for band in DENSITY_BANDS:
        assert sum(_band_counts(case.result.regions[n], voxel_ml)[band] for n in ZONE_NAMES) == lungs[band]
        assert sum(_band_counts(case.result.regions[n], voxel_ml)[band] for n in ("core", "rind")) == lungs[band]


def test_left_and_right_make_the_lungs(case: Case) -> None:
    voxel_ml = case.volume.geometry.voxel_volume_ml
    lungs, left, right = (case.measured[n] for n in ("lungs", "lung_left", "lung_right"))
    assert left.voxel_count + right.voxel_count == lungs.voxel_count
    assert left.volume_ml + right.volume_ml == pytest.approx(lungs.volume_ml, rel=1e-12)
    sides = _band_counts(left, voxel_ml), _band_counts(right, voxel_ml)
    assert {b: sides[0][b] + sides[1][b] for b in DENSITY_BANDS} == _band_counts(lungs, voxel_ml)
    assert left.mass_g is not None and right.mass_g is not None and lungs.mass_g is not None
    assert left.mass_g + right.mass_g == pytest.approx(lungs.mass_g, rel=1e-9)
    zones_mass = sum(case.result.regions[n].mass_g or 0.0 for n in ZONE_NAMES)
    assert zones_mass == pytest.approx(lungs.mass_g, rel=1e-9)


def test_rerun_is_bit_identical(case: Case) -> None:
    """Segmentation and densitometry again from the same CT: the same masks and the same numbers, bit for bit."""
    again = segment_lungs(case.volume)
    np.testing.assert_array_equal(again.left, case.lungs.left)
    np.testing.assert_array_equal(again.right, case.lungs.right)
    result = analyse_densitometry(case.volume, again.left, again.right, SOURCE)
    assert _as_dict(result) == _as_dict(case.result)
    np.testing.assert_array_equal(result.zone_map.labels, case.result.zone_map.labels)
    np.testing.assert_array_equal(result.zone_map.rind, case.result.zone_map.rind)


def _most_interior_point(zone: np.ndarray, spacing: tuple[float, float, float]) -> tuple[tuple[int, int, int], float]:
    """The voxel of ``zone`` farthest (mm) from every voxel outside it: away from the pleura and the cuts."""
    box = ndimage.find_objects(zone.astype(np.uint8))[0]
    distance = ndimage.distance_transform_edt(np.pad(zone[box], 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    index = np.unravel_index(int(np.argmax(distance)), distance.shape)
    centre = tuple(int(i) + s.start for i, s in zip(index, box, strict=True))
    return centre, float(distance[index])


def _ball_fraction(
    shape: tuple[int, ...], spacing: tuple[float, float, float], centre: tuple[int, int, int], radius: float
) -> np.ndarray:
    """Each voxel's share of a ball (``SUPERSAMPLING`` sub-samples per axis), zero far from it."""
    fraction = np.zeros(shape, dtype=np.float64)
    reach = [int(math.ceil(radius / s)) + 1 for s in spacing]
    box = tuple(slice(c - r, c + r + 1) for c, r in zip(centre, reach, strict=True))
    offsets = (np.arange(SUPERSAMPLING) + 0.5) / SUPERSAMPLING - 0.5
    axes = [((np.arange(-r, r + 1)[:, None] + offsets[None, :]) * s) ** 2 for r, s in zip(reach, spacing, strict=True)]
    squared = (
        axes[0][:, None, None, :, None, None]
        + axes[1][None, :, None, None, :, None]
        + axes[2][None, None, :, None, None, :]
    )
    fraction[box] = (squared <= radius**2).mean(axis=(3, 4, 5))
    return fraction


def test_painted_lesion_raises_exactly_its_zone(case: Case) -> None:
    """A 40 HU ball raises its zone's non-aerated band by its volume; no other zone changes.

    Tolerance.  A voxel a fraction ``f`` inside the ball becomes ``40 f + (1 - f) h`` HU (``h`` its
    HU before).  A voxel wholly inside (``f = 1``) is 40 HU, non-aerated, so it adds one voxel
    unless it was non-aerated already (a vessel); a voxel the ball misses does not change; a
    partial voxel adds one voxel or none.  So, with ``V`` the ball's volume in voxels
    (``sum f``), the increase ``N`` is bracketed by
    ``#{f = 1, not non-aerated before} <= N <= #{f > 0, not non-aerated before}`` and
    ``|N - V| <= #{0 < f < 1} + #{f = 1, non-aerated before}``: the partial-volume tolerance.
    ``sum f`` in turn approximates 4/3 pi r^3 to within the sub-sampling of the partial voxels.
    On 5 and 8 mm slices most of a 20 mm ball's voxels are partial, so that bound is loose (as large
    as the ball itself); the bracket and the exact count of the voxels whose own HU crossed -250 HU (counted
    here from the painted HU, not by the code under test) are the tight checks.
    """
    volume, result = case.volume, case.result
    geometry = volume.geometry
    voxel_ml = geometry.voxel_volume_ml
    k = ZONE_NAMES.index(case.zone) + 1
    zone = result.zone_map.labels == k
    centre, depth_mm = _most_interior_point(zone, geometry.spacing)
    diagonal = math.sqrt(sum(s * s for s in geometry.spacing))
    assert depth_mm > LESION_RADIUS_MM + diagonal, f"{case.zone} has no point far enough from its boundary"
    f = _ball_fraction(volume.hu.shape, geometry.spacing, centre, LESION_RADIUS_MM)
    touched = f > 0
    assert np.all(zone[touched])  # the whole ball, partial voxels included, lies in the zone (so in the lung)

    painted_hu = volume.hu.copy()
    painted_hu[touched] = (f[touched] * LESION_HU + (1.0 - f[touched]) * volume.hu[touched]).astype(np.float32)
    painted = replace(volume, hu=painted_hu)
    after = analyse_densitometry(painted, case.lungs.left, case.lungs.right, SOURCE)
    np.testing.assert_array_equal(after.zone_map.labels, result.zone_map.labels)

    before_non = (volume.hu >= -250.0) & (volume.hu < 100.0)
    full = f == 1.0
    partial = touched & ~full
    low = int(np.count_nonzero(full & ~before_non))
    high = int(np.count_nonzero(touched & ~before_non))
    tolerance = int(np.count_nonzero(partial)) + int(np.count_nonzero(full & before_non))
    increase = (
        _band_counts(after.regions[case.zone], voxel_ml)["non_aerated"]
        - _band_counts(result.regions[case.zone], voxel_ml)["non_aerated"]
    )
    assert low <= increase <= high
    after_non = (painted_hu >= -250.0) & (painted_hu < 100.0)
    assert increase == int(np.count_nonzero(touched & ~before_non & after_non))  # exactly the voxels that crossed
    ball_voxels = float(f.sum())
    assert abs(increase - ball_voxels) <= tolerance
    assert (
        abs(ball_voxels * voxel_ml - 4.0 / 3.0 * math.pi * LESION_RADIUS_MM**3 / 1000.0)
        <= np.count_nonzero(partial) * voxel_ml
    )
    assert after.regions[case.zone].voxel_count == result.regions[case.zone].voxel_count
    for name in ZONE_NAMES:
        if name != case.zone:
            assert after.regions[name].density_bands == result.regions[name].density_bands, name
            assert after.regions[name].mass_g == result.regions[name].mass_g, name
    # the painted CT's own lung mask: the lesion lies deep inside the lung, so the mask should not lose it
    relabelled = segment_lungs(painted)
    lost = int(np.count_nonzero(touched & ~(relabelled.left | relabelled.right)))
    assert lost == 0, f"the lung mask of the painted CT leaves out {lost} of the lesion's {int(touched.sum())} voxels"
