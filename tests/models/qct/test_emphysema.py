"""models.qct.emphysema: the cluster exponent D on populations of known D, the upper/lower ratio by hand.

Truth for D.  A population whose cumulative counts are ``Y(>= s) = K (s / s0)^-D`` at sizes
``s0 2^i`` lies on a straight line of slope ``-D`` in log-log, so the least-squares slope is ``-D``
in exact arithmetic.  The populations below are built so that Y is an integer power law exactly:
D1 (the phantom's) ``Y = 128, 64, 32, 16, 8`` at 2 .. 32 voxels; D2 ``Y = 256, 64, 16`` at 2, 4, 8
(the 4 clusters of 16 voxels have Y < 5 and leave the fit).  Tolerance of "exactly": the only error
is floating point.  Every log10 is correctly rounded to within an ulp (about 2.2e-16 relative, so
below 1e-15 absolute for values under 5), the centred sums and the division add a few ulp more, and
the x spread is at least log10(4) = 0.6: D is within 1e-12 of its truth with orders of magnitude to
spare, while any wrong point (an off-by-one count, one cluster too many) moves it by more than 1e-3.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.findings import Geometry, RegionMeasurements
from models.phantom import D1_CLUSTERS, densitometry_phantom
from models.qct.emphysema import (
    MIN_CLUSTER_VOXELS,
    MIN_CLUSTERS_AT_OR_ABOVE,
    MIN_FIT_POINTS,
    cluster_exponent,
    upper_lower_ratio,
)
from models.qct.measurements import measure_values

#: Floating-point tolerance of an exactly power-law population (module docstring).
EXACT_D_TOLERANCE = 1e-12
D2_CLUSTERS: tuple[tuple[int, int], ...] = ((2, 192), (4, 48), (8, 12), (16, 4))


def _cumulative(clusters: tuple[tuple[int, int], ...]) -> dict[int, int]:
    """Y(>= s) of a population, for each of its sizes."""
    return {s: sum(n for size, n in clusters if size >= s) for s, _ in clusters}


def _paint(clusters: tuple[tuple[int, int], ...], extra_singles: int = 0) -> np.ndarray:
    """Clusters as straight rods along x, one per row, every other row and slice empty (none touch).

    Written independently of the phantom's placement: the rods' shape differs (a line, not a
    corner box), which D must not care about.
    """
    rods = [size for size, count in clusters for _ in range(count)] + [1] * extra_singles
    rows_per_slice = 40
    mask = np.zeros((2 * (len(rods) // rows_per_slice + 1), 2 * rows_per_slice, 70), dtype=bool)
    for k, size in enumerate(rods):
        z, y = divmod(k, rows_per_slice)
        mask[2 * z, 2 * y, 1 : 1 + size] = True
    return mask


def test_the_test_populations_are_exact_power_laws() -> None:
    """The truth itself: Y(>=s) = 128 (s/2)^-1 and 256 (s/2)^-2 at the fitted sizes."""
    assert _cumulative(D1_CLUSTERS) == {s: 128 * 2 // s for s in (2, 4, 8, 16, 32)}
    d2 = _cumulative(D2_CLUSTERS)
    assert {s: d2[s] for s in (2, 4, 8)} == {s: 256 * 4 // s**2 for s in (2, 4, 8)}
    assert d2[16] < MIN_CLUSTERS_AT_OR_ABOVE


@pytest.mark.parametrize(("clusters", "d", "sizes"), [(D1_CLUSTERS, 1.0, (2, 32)), (D2_CLUSTERS, 2.0, (2, 8))])
def test_d_of_exact_power_laws(clusters: tuple[tuple[int, int], ...], d: float, sizes: tuple[int, int]) -> None:
    voxel_ml = 0.0125
    fit = cluster_exponent(_paint(clusters), voxel_ml)
    assert fit.exponent_d is not None
    assert abs(fit.exponent_d - d) < EXACT_D_TOLERANCE
    assert fit.count == sum(n for _, n in clusters)
    assert fit.range_ml == pytest.approx((sizes[0] * voxel_ml, sizes[1] * voxel_ml))
    assert fit.fitted == sum(n for s, n in clusters if sizes[0] <= s <= sizes[1])
    assert fit.note == ""


def test_phantom_clusters_give_d_of_one_to_floating_point() -> None:
    """The densitometry phantom's LU population, placed as corner boxes, gives D = 1 to 1e-12."""
    phantom = densitometry_phantom()
    low = phantom.hu < -950.0
    fit = cluster_exponent(low, phantom.geometry.voxel_volume_ml)
    assert fit.count == sum(n for _, n in D1_CLUSTERS)  # no two clusters touch
    assert fit.exponent_d is not None and abs(fit.exponent_d - 1.0) < EXACT_D_TOLERANCE


def test_single_voxels_and_the_sparse_tail_stay_out_of_the_fit() -> None:
    """1-voxel clusters are counted but not fitted; sizes with fewer than 5 clusters at or above are dropped.

    Four of D1's eight 32-voxel clusters grow to 64: Y(>=32) is still 8 and Y(>=64) = 4 < 5, so
    the fit, and D = 1, do not change, and neither do 500 single voxels.
    """
    grown = ((2, 64), (4, 32), (8, 16), (16, 8), (32, 4), (64, 4))
    fit = cluster_exponent(_paint(grown, extra_singles=500), 0.01)
    assert MIN_CLUSTER_VOXELS == 2
    assert fit.exponent_d is not None and abs(fit.exponent_d - 1.0) < EXACT_D_TOLERANCE
    assert fit.count == 128 + 500
    assert fit.range_ml == pytest.approx((0.02, 0.32))
    assert fit.fitted == 124  # sizes 2 to 32: 64 + 32 + 16 + 8 + 4


def test_face_connectivity() -> None:
    """Voxels touching at an edge or a corner are separate clusters; touching at a face, one."""
    mask = np.zeros((4, 4, 4), dtype=bool)
    mask[0, 0, 0] = mask[1, 1, 0] = mask[2, 2, 2] = True  # edge and corner neighbours only
    mask[3, 0, 0] = mask[3, 0, 1] = True  # face neighbours
    assert cluster_exponent(mask, 1.0).count == 4


def test_too_few_clusters_gives_none_with_a_note() -> None:
    """Two distinct fit sizes are fewer than the three a power law needs."""
    few = ((2, 10), (4, 6))
    fit = cluster_exponent(_paint(few), 0.01)
    assert MIN_FIT_POINTS == 3
    assert fit.exponent_d is None and fit.range_ml is None and fit.fitted == 0
    assert fit.count == 16
    assert "not computed" in fit.note and "2 distinct sizes" in fit.note
    empty = cluster_exponent(np.zeros((3, 3, 3), dtype=bool), 0.01)
    assert empty.exponent_d is None and empty.count == 0 and "not computed" in empty.note


GEOMETRY = Geometry((0.0, 0.0, 0.0), (2.0, 1.0, 1.0), ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)), (1, 1, 1))


def _zone(name: str, voxels: int, low: int) -> tuple[str, RegionMeasurements]:
    """A zone of ``voxels`` voxels of which ``low`` are below -950 HU."""
    values = np.full(voxels, -850.0, dtype=np.float32)
    values[:low] = -990.0
    return name, measure_values(values, GEOMETRY, name)


def test_upper_lower_ratio_pools_the_zones() -> None:
    """RU 10/100 and LU 6/300 pool to 16/400 = 4 %; RL 4/200 and LL 4/200 to 8/400 = 2 %: ratio 2.

    The mean of the per-zone percentages would give (10 + 2) / 2 / 2 = 3 instead: pooling is what is tested.
    """
    regions = dict([_zone("RU", 100, 10), _zone("LU", 300, 6), _zone("RL", 200, 4), _zone("LL", 200, 4)])
    ratio, note = upper_lower_ratio(regions)
    assert ratio == pytest.approx(2.0) and note == ""


def test_upper_lower_ratio_without_lower_laa_is_none_with_a_note() -> None:
    regions = dict([_zone("RU", 100, 10), _zone("LU", 300, 6), _zone("RL", 200, 0), _zone("LL", 200, 0)])
    ratio, note = upper_lower_ratio(regions)
    assert ratio is None and "no voxel below -950 HU in the lower zones" in note


def test_upper_lower_ratio_with_a_missing_or_empty_zone_is_none() -> None:
    three = dict([_zone("RU", 100, 10), _zone("LU", 300, 6), _zone("RL", 200, 4)])
    ratio, note = upper_lower_ratio(three)
    assert ratio is None and "empty or missing" in note
    empty_lower = dict([_zone("RU", 100, 10), _zone("LU", 300, 6), _zone("RL", 0, 0), _zone("LL", 0, 0)])
    ratio, note = upper_lower_ratio(empty_lower)
    assert ratio is None and "empty or missing" in note
