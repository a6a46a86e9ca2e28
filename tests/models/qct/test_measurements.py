"""models.qct.measurements: hand-computed values on tiny arrays, lobes, empty regions, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from models.findings import LUNG_REGIONS, REGION_NAMES, Geometry, Volume
from models.phantom import LesionSpec, chest_phantom
from models.qct.measurements import measure_lungs, measure_region, measure_regions

#: Ten voxels chosen on and around every threshold: -950 and -500 (FPV, thesis 2.4.3, inclusive),
#: -950 (LAA, strict), -600 and -250 (HAA, inclusive).
VALUES = np.array([-1000, -960, -950, -900, -600, -500, -499, -250, 0, 100], dtype=np.float32)


def _geometry(shape: tuple[int, int, int], spacing: tuple[float, float, float] = (2.0, 1.0, 1.0)) -> Geometry:
    return Geometry(
        origin=(0.0, 0.0, 0.0),
        spacing=spacing,
        direction=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
        shape=shape,
    )


def test_hand_computed_values() -> None:
    hu = VALUES.reshape(1, 2, 5)
    result = measure_region(hu, np.ones(hu.shape, dtype=bool), _geometry(hu.shape), "lungs")
    assert result.region == "lungs"
    assert result.voxel_count == 10
    assert result.volume_ml == pytest.approx(10 * 0.002)  # 2 mm^3 voxels
    # FPV: -950, -900, -600, -500 -> 4 voxels (both ends included)
    assert result.fpv_ml == pytest.approx(4 * 0.002)
    # LAA-950: -1000, -960 -> 2 of 10 (-950 itself is not below -950)
    assert result.laa950_pct == pytest.approx(20.0)
    # HAA: -600, -500, -499, -250 -> 4 of 10
    assert result.haa_pct == pytest.approx(40.0)
    assert result.mean_hu == pytest.approx(-5559.0 / 10)
    # 15th percentile, linear: rank 0.15 * 9 = 1.35 between -960 and -950
    assert result.perc15_hu == pytest.approx(-956.5)
    assert result.note == ""


def test_only_masked_voxels_count() -> None:
    hu = VALUES.reshape(1, 2, 5)
    mask = np.zeros(hu.shape, dtype=bool)
    mask[0, 0, :] = True  # -1000, -960, -950, -900, -600
    result = measure_region(hu, mask, _geometry(hu.shape, (1.0, 1.0, 1.0)), "lung_left")
    assert result.voxel_count == 5
    assert result.volume_ml == pytest.approx(0.005)
    assert result.fpv_ml == pytest.approx(0.003)
    assert result.laa950_pct == pytest.approx(40.0)
    assert result.haa_pct == pytest.approx(20.0)
    assert result.mean_hu == pytest.approx(-882.0)
    assert result.perc15_hu == pytest.approx(-1000.0 + 0.6 * 40.0)


def test_empty_region_is_none_not_zero() -> None:
    hu = VALUES.reshape(1, 2, 5)
    result = measure_region(hu, np.zeros(hu.shape, dtype=bool), _geometry(hu.shape), "lung_right")
    assert result.voxel_count == 0
    assert result.volume_ml == 0.0
    assert result.fpv_ml is None
    assert result.laa950_pct is None
    assert result.perc15_hu is None
    assert result.mean_hu is None
    assert result.haa_pct is None
    assert "empty" in result.note and "lung_right" in result.note
    assert result.as_dict()["fpv_ml"] is None


def test_refuses_mismatched_or_non_boolean_masks() -> None:
    hu = VALUES.reshape(1, 2, 5)
    with pytest.raises(ValueError, match="boolean"):
        measure_region(hu, np.ones(hu.shape, dtype=np.uint8), _geometry(hu.shape), "lungs")
    with pytest.raises(ValueError, match="shapes differ"):
        measure_region(hu, np.ones((1, 5, 2), dtype=bool), _geometry(hu.shape), "lungs")


def test_measure_lungs_union_and_sides() -> None:
    hu = VALUES.reshape(1, 2, 5)
    geometry = _geometry(hu.shape)
    volume = Volume(hu=hu, geometry=geometry, source_sop_instance_uids=("1.2.3",))
    left = np.zeros(hu.shape, dtype=bool)
    right = np.zeros(hu.shape, dtype=bool)
    left[0, 0, :3] = True  # -1000, -960, -950
    right[0, 1, :] = True  # -500, -499, -250, 0, 100
    result = measure_lungs(volume, left, right)
    assert tuple(result) == LUNG_REGIONS
    assert result["lungs"].voxel_count == 8
    assert result["lungs"].volume_ml == pytest.approx(result["lung_left"].volume_ml + result["lung_right"].volume_ml)
    assert result["lung_left"].laa950_pct == pytest.approx(200.0 / 3)
    assert result["lung_right"].fpv_ml == pytest.approx(0.002)
    assert result["lungs"].fpv_ml == pytest.approx(0.004)
    assert result["lungs"].mean_hu == pytest.approx((-1000 - 960 - 950 - 500 - 499 - 250 + 0 + 100) / 8)


def test_measure_lungs_refuses_overlap() -> None:
    hu = VALUES.reshape(1, 2, 5)
    volume = Volume(hu=hu, geometry=_geometry(hu.shape), source_sop_instance_uids=("1.2.3",))
    both = np.ones(hu.shape, dtype=bool)
    with pytest.raises(ValueError, match="overlap in 10 voxels"):
        measure_lungs(volume, both, both)


def test_measure_regions_with_lobes_by_hand() -> None:
    hu = VALUES.reshape(1, 2, 5)
    volume = Volume(hu=hu, geometry=_geometry(hu.shape), source_sop_instance_uids=("1.2.3",))
    left = np.zeros(hu.shape, dtype=bool)
    right = np.zeros(hu.shape, dtype=bool)
    left[0, 0, :] = True  # -1000, -960, -950, -900, -600
    right[0, 1, :] = True  # -500, -499, -250, 0, 100
    lul = np.zeros(hu.shape, dtype=bool)
    lul[0, 0, :2] = True  # -1000, -960
    lll = left & ~lul  # -950, -900, -600
    rml = np.zeros(hu.shape, dtype=bool)
    rml[0, 1, 3:] = True  # 0, 100
    result = measure_regions(volume, {"LLL": lll, "lung_right": right, "RML": rml, "LUL": lul, "lung_left": left})
    assert tuple(result) == ("lungs", "lung_left", "lung_right", "LUL", "LLL", "RML")
    assert result["LUL"].laa950_pct == pytest.approx(100.0)
    assert result["LUL"].fpv_ml == pytest.approx(0.0)
    assert result["LLL"].fpv_ml == pytest.approx(3 * 0.002)  # -950 and -600 are inside [-950, -500]
    assert result["LLL"].haa_pct == pytest.approx(100.0 / 3)
    assert result["LLL"].perc15_hu == pytest.approx(-950.0 + 0.3 * 50.0)
    assert result["RML"].mean_hu == pytest.approx(50.0)
    assert result["RML"].haa_pct == pytest.approx(0.0)
    assert result["lungs"].voxel_count == 10
    assert result["lung_left"].volume_ml == pytest.approx(result["LUL"].volume_ml + result["LLL"].volume_ml)


def test_measure_regions_keeps_measure_lungs_numbers() -> None:
    hu = VALUES.reshape(1, 2, 5)
    volume = Volume(hu=hu, geometry=_geometry(hu.shape), source_sop_instance_uids=("1.2.3",))
    left = np.zeros(hu.shape, dtype=bool)
    left[0, 0, 1:4] = True
    right = np.zeros(hu.shape, dtype=bool)
    right[0, 1, :2] = True
    assert measure_regions(volume, {"lung_left": left, "lung_right": right}) == measure_lungs(volume, left, right)


@pytest.mark.parametrize(
    ("masks", "message"),
    [
        ({"lung_left": "left"}, r"\['lung_right'\] are required"),
        ({"lung_left": "left", "lung_right": "right", "lesions": "left"}, "not region names"),
        ({"lung_left": "left", "lung_right": "left"}, "overlap"),
        ({"lung_left": "left", "lung_right": "right", "lungs": "left"}, "differs from the union"),
        ({"lung_left": "left", "lung_right": "right", "RUL": "wrong-shape"}, "shapes differ"),
    ],
)
def test_measure_regions_refusals(masks: dict[str, str], message: str) -> None:
    hu = VALUES.reshape(1, 2, 5)
    volume = Volume(hu=hu, geometry=_geometry(hu.shape), source_sop_instance_uids=("1.2.3",))
    left = np.zeros(hu.shape, dtype=bool)
    left[0, 0] = True
    arrays = {"left": left, "right": ~left, "wrong-shape": np.ones((1, 5, 2), dtype=bool)}
    with pytest.raises(ValueError, match=message):
        measure_regions(volume, {name: arrays[key] for name, key in masks.items()})


def test_lobe_measurements_on_a_phantom_with_ground_glass() -> None:
    phantom = chest_phantom((38, 128, 128), (8.0, 3.0, 3.0), lesions=(LesionSpec("RUL", "ggo", 0.4),), noise_hu=0.0)
    masks = {"lung_left": phantom.left, "lung_right": phantom.right, **phantom.lobes}
    result = measure_regions(phantom.volume(), masks)
    assert tuple(result) == REGION_NAMES
    for lung, lobes in (("lung_left", ("LUL", "LLL")), ("lung_right", ("RUL", "RML", "RLL"))):
        assert sum(result[name].volume_ml for name in lobes) == pytest.approx(result[lung].volume_ml)
        fpv = [result[name].fpv_ml for name in lobes]
        assert sum(v for v in fpv if v is not None) == pytest.approx(result[lung].fpv_ml)
    rul, rll = result["RUL"], result["RLL"]
    assert rul.haa_pct is not None and rll.haa_pct is not None and rul.mean_hu is not None and rll.mean_hu is not None
    assert rul.haa_pct >= 35.0 > 10.0 > rll.haa_pct  # the ground glass is -600 HU, inside [-600, -250]
    assert rul.mean_hu > rll.mean_hu + 50.0
