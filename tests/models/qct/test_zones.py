"""models.qct.zones: equal-height thirds and the 10 mm rind on lungs of known extent.

Truths, derived here rather than taken from the code:

- Thirds.  A lung occupying ``n`` slices has a head-foot extent of ``n`` slice spacings, from the
  outer face of its lowest slice to that of its highest.  Counting slices ``j = 0 .. n-1`` from the
  foot end, slice ``j``'s centre lies ``(j + 1/2)`` spacings above the bottom, so it is in third
  ``floor(3 (2j + 1) / (2n))`` (0 lower, 1 middle, 2 upper).  ``3 (2j + 1)`` is odd and ``2n m``
  even, so no centre is ever exactly on a cut and integer arithmetic gives the exact answer.
- Rind of a box lung.  For a voxel inside an axis-aligned box the nearest point outside the box is
  reached along one axis (any outside point is outside the box's range on some axis ``a``, so it is
  at least the distance to the box's face on ``a``): the distance is ``min_a d_a`` with ``d_a`` =
  (layers to the nearer face on axis ``a``, counting the voxel itself) x spacing ``s_a``.  A voxel is
  in the rind when that is at most 10 mm, so on each face the rind is ``m_a = floor(10 / s_a)``
  layers deep and the core is the box shrunk by ``m_a`` on each face of each axis:
  ``rind = prod(n_a) - prod(max(0, n_a - 2 m_a))``.  A face at the edge of the array has no
  surface (nothing outside is imaged there), so it adds no layers.  Two boxes at least one voxel
  apart do not change each other's rind: the step out of one box lands in the gap.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.findings import RIND_THICKNESS_MM, ZONE_NAMES, Geometry
from models.qct.zones import zone_map

Box = tuple[slice, slice, slice]
IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
#: Feet first: slice index increases towards the feet (z column -1); a 180 degree turn about y.
FEET_FIRST = ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0))


def _geometry(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    direction: tuple[tuple[float, float, float], ...] = IDENTITY,
) -> Geometry:
    return Geometry(origin=(-120.0, 35.0, -310.0), spacing=spacing, direction=direction, shape=shape)


def _box(shape: tuple[int, int, int], box: Box) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[box] = True
    return mask


def _expected_third(k: int, first: int, stop: int, head_first: bool) -> int:
    """Third (0 lower, 1 middle, 2 upper) of slice ``k`` of a lung on slices ``[first, stop)``."""
    n = stop - first
    j = k - first if head_first else stop - 1 - k  # slices counted from the foot end
    return (3 * (2 * j + 1)) // (2 * n)


def _expected_labels(shape: tuple[int, int, int], lungs: dict[str, Box], head_first: bool) -> np.ndarray:
    """Zone labels of box lungs from :func:`_expected_third` alone."""
    labels = np.zeros(shape, dtype=np.uint8)
    for side, box in lungs.items():
        names = ("RL", "RM", "RU") if side == "right" else ("LL", "LM", "LU")
        for k in range(box[0].start, box[0].stop):
            third = _expected_third(k, box[0].start, box[0].stop, head_first)
            labels[k, box[1], box[2]] = ZONE_NAMES.index(names[third]) + 1
    return labels


def _analytic_rind(shape: tuple[int, int, int], box: Box, spacing: tuple[float, float, float]) -> int:
    """Rind voxels of one box lung (module docstring), faces at the array edge adding no layers."""
    total, core = 1, 1
    for s, n, step in zip(box, shape, spacing, strict=True):
        layers = math.floor(RIND_THICKNESS_MM / step + 1e-9)
        low = 0 if s.start == 0 else layers
        high = 0 if s.stop == n else layers
        total *= s.stop - s.start
        core *= max(0, s.stop - s.start - low - high)
    return total - core


#: (name, shape, spacing, right box, left box): slice counts 72 and 66 (multiples of 3), 10 and 29
#: (not), anisotropic spacings whose 10 mm is and is not a whole number of voxels.
CASES = [
    (
        "thirds-exact",
        (80, 40, 90),
        (2.5, 2.0, 2.0),
        (slice(4, 76), slice(5, 35), slice(5, 40)),
        (slice(7, 73), slice(5, 35), slice(50, 85)),
    ),
    (
        "not-multiple-of-3",
        (34, 40, 100),
        (5.0, 0.7, 0.7),
        (slice(2, 12), slice(3, 37), slice(2, 45)),
        (slice(3, 32), slice(3, 37), slice(50, 97)),
    ),
    (
        "anisotropic",
        (40, 50, 70),
        (1.25, 0.8, 3.0),
        (slice(3, 37), slice(4, 46), slice(2, 30)),
        (slice(5, 35), slice(4, 46), slice(33, 68)),
    ),
]


@pytest.mark.parametrize("direction", [IDENTITY, FEET_FIRST], ids=["head-first", "feet-first"])
@pytest.mark.parametrize(("name", "shape", "spacing", "right_box", "left_box"), CASES, ids=[c[0] for c in CASES])
def test_thirds_cuts_and_rind_of_box_lungs(
    name: str,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    right_box: Box,
    left_box: Box,
    direction: tuple[tuple[float, float, float], ...],
) -> None:
    geometry = _geometry(shape, spacing, direction)
    right, left = _box(shape, right_box), _box(shape, left_box)
    zones = zone_map(geometry, left, right)
    head_first = direction[2][2] > 0
    expected = _expected_labels(shape, {"right": right_box, "left": left_box}, head_first)
    np.testing.assert_array_equal(zones.labels, expected)
    # cuts: a third of the extent (n slice spacings) above its bottom face, in patient z
    sz, z0, sign = spacing[0], geometry.origin[2], direction[2][2]
    for lung, box in (("lung_right", right_box), ("lung_left", left_box)):
        lowest = box[0].start if head_first else box[0].stop - 1
        bottom = z0 + sign * lowest * sz - sz / 2.0
        height = (box[0].stop - box[0].start) * sz
        assert zones.cuts_mm[lung] == pytest.approx((bottom + height / 3.0, bottom + 2.0 * height / 3.0))
    # rind: the analytic count, per lung, and only lung voxels
    assert not np.any(zones.rind & ~(left | right))
    for mask, box in ((right, right_box), (left, left_box)):
        assert int(np.count_nonzero(zones.rind & mask)) == _analytic_rind(shape, box, spacing)
    assert zones.rind_mm == RIND_THICKNESS_MM


def test_slices_per_third_when_not_a_multiple_of_three() -> None:
    """10 slices split 3/4/3 and 29 slices 10/9/10 by equal height (worked by hand from the centres)."""
    _, shape, spacing, right_box, left_box = CASES[1]
    zones = zone_map(_geometry(shape, spacing), _box(shape, left_box), _box(shape, right_box))
    per_zone = {name: int(np.count_nonzero(zones.labels == k)) for k, name in enumerate(ZONE_NAMES, 1)}
    right_slice = 34 * 43  # voxels of one slice of the right box
    left_slice = 34 * 47
    assert per_zone == {
        "RL": 3 * right_slice,
        "RM": 4 * right_slice,
        "RU": 3 * right_slice,
        "LL": 10 * left_slice,
        "LM": 9 * left_slice,
        "LU": 10 * left_slice,
    }


def test_equal_height_not_equal_volume() -> None:
    """A pyramid lung, wide at the base: the cuts stay at thirds of its height (the lower third holds most volume)."""
    shape, spacing = (33, 64, 64), (3.0, 1.0, 1.0)
    right = np.zeros(shape, dtype=bool)
    for k in range(1, 31):  # 30 slices, half-width shrinking with height
        half = 31 - k
        right[k, 32 - half : 32 + half, 32 - half : 32 + half] = True
    zones = zone_map(_geometry(shape, spacing), np.zeros(shape, dtype=bool), right)
    rows = {
        name: sorted({int(k) for k in np.nonzero(zones.labels == ZONE_NAMES.index(name) + 1)[0]})
        for name in ("RL", "RM", "RU")
    }
    assert rows == {"RL": list(range(1, 11)), "RM": list(range(11, 21)), "RU": list(range(21, 31))}
    volumes = [int(np.count_nonzero(zones.labels == ZONE_NAMES.index(n) + 1)) for n in ("RL", "RM", "RU")]
    assert volumes[0] > volumes[1] > volumes[2]
    assert "lung_left" not in zones.cuts_mm


def test_every_lung_voxel_in_one_zone_of_its_own_side() -> None:
    """Irregular lungs (ellipsoids with holes): right voxels in RU/RM/RL, left in LU/LM/LL, nothing else labelled."""
    shape, spacing = (45, 80, 120), (2.0, 1.5, 1.5)
    z, y, x = np.indices(shape, dtype=np.float64)
    rng = np.random.default_rng(11)
    holes = rng.random(shape) < 0.05
    right = ((z - 22) / 20) ** 2 + ((y - 40) / 30) ** 2 + ((x - 32) / 25) ** 2 <= 1.0
    left = ((z - 24) / 18) ** 2 + ((y - 40) / 30) ** 2 + ((x - 88) / 25) ** 2 <= 1.0
    right &= ~holes
    left &= ~holes
    zones = zone_map(_geometry(shape, spacing), left, right)
    assert set(np.unique(zones.labels[right]).tolist()) == {1, 2, 3}
    assert set(np.unique(zones.labels[left]).tolist()) == {4, 5, 6}
    assert not np.any(zones.labels[~(left | right)])
    assert not np.any(zones.rind & ~(left | right))
    total = sum(int(np.count_nonzero(zones.mask(name))) for name in ZONE_NAMES)
    assert total == int(np.count_nonzero(left | right))
    assert int(np.count_nonzero(zones.mask("core"))) + int(np.count_nonzero(zones.mask("rind"))) == total
    with pytest.raises(ValueError, match="not a zone region"):
        zones.mask("RUL")


def test_no_rind_where_the_lung_meets_the_edge_of_the_field_of_view() -> None:
    """A box cut by the top of the scan and the array's side: no layers on those faces."""
    shape, spacing = (30, 40, 40), (2.0, 2.0, 2.0)
    box = (slice(6, 30), slice(5, 35), slice(0, 20))  # touches the last slice and column 0
    zones = zone_map(_geometry(shape, spacing), np.zeros(shape, dtype=bool), _box(shape, box))
    assert int(np.count_nonzero(zones.rind)) == _analytic_rind(shape, box, spacing)
    assert not zones.rind[29, 20, 10] and not zones.rind[20, 20, 0]  # at the cut edges, deep inside otherwise
    assert zones.rind[20, 20, 15]  # 5 voxels (10 mm) from the face at column 19/20


def test_empty_masks_give_no_zones() -> None:
    shape = (6, 8, 8)
    empty = np.zeros(shape, dtype=bool)
    zones = zone_map(_geometry(shape, (1.0, 1.0, 1.0)), empty, empty)
    assert not zones.labels.any() and not zones.rind.any() and dict(zones.cuts_mm) == {}


def test_invalid_masks_raise() -> None:
    shape = (6, 8, 8)
    geometry = _geometry(shape, (1.0, 1.0, 1.0))
    left = _box(shape, (slice(1, 5), slice(1, 7), slice(1, 4)))
    right = _box(shape, (slice(1, 5), slice(1, 7), slice(3, 7)))  # shares column 3 with the left
    with pytest.raises(ValueError, match="overlap"):
        zone_map(geometry, left, right)
    apart = _box(shape, (slice(1, 5), slice(1, 7), slice(5, 7)))
    with pytest.raises(ValueError, match="boolean"):
        zone_map(geometry, left.astype(np.uint8), apart)
    with pytest.raises(ValueError, match="boolean"):
        zone_map(geometry, left, apart[:, :, :7])
