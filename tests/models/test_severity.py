"""models.severity: CTSS band boundaries (seed 003), per-lobe involvement from masks, totals, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from models.findings import LOBE_NAMES, Geometry
from models.phantom import LesionSpec, chest_phantom
from models.severity import ctss_from_involvement, severity_from_masks

#: Each lobe is one 100 x 100 slice of a (5, 100, 100) grid: 10 000 voxels, so k lesion voxels
#: are exactly k / 100 % of it.
LOBE_VOXELS = 10_000


def _geometry(spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Geometry:
    return Geometry(
        origin=(0.0, 0.0, 0.0),
        spacing=spacing,
        direction=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
        shape=(5, 100, 100),
    )


def _lobes() -> dict[str, np.ndarray]:
    lobes = {}
    for k, name in enumerate(LOBE_NAMES):
        mask = np.zeros((5, 100, 100), dtype=bool)
        mask[k] = True
        lobes[name] = mask
    return lobes


def _lesions(voxels_per_lobe: dict[str, int]) -> np.ndarray:
    lesions = np.zeros((5, 100, 100), dtype=bool)
    for k, name in enumerate(LOBE_NAMES):
        lesions[k].ravel()[: voxels_per_lobe.get(name, 0)] = True
    return lesions


BOUNDARIES = [
    (0.0, 0),
    (4.99, 1),
    (5.0, 2),
    (25.0, 2),
    (25.01, 3),
    (50.0, 3),
    (75.0, 4),
    (75.01, 5),
    (100.0, 5),
]


@pytest.mark.parametrize(("percent", "score"), BOUNDARIES)
def test_band_boundaries(percent: float, score: int) -> None:
    assert ctss_from_involvement(percent) == score


@pytest.mark.parametrize(("percent", "score"), BOUNDARIES)
def test_band_boundaries_through_masks(percent: float, score: int) -> None:
    voxels = round(percent * LOBE_VOXELS / 100.0)
    result = severity_from_masks(_lobes(), _lesions({"RML": voxels}), _geometry())
    assert result.lobes["RML"]["involvement_pct"] == pytest.approx(percent, abs=1e-9)
    assert result.lobes["RML"]["ctss"] == score
    assert result.total_ctss == score


def test_a_single_lesion_voxel_is_involvement() -> None:
    result = severity_from_masks(_lobes(), _lesions({"LUL": 1}), _geometry())
    assert result.lobes["LUL"]["involvement_pct"] == pytest.approx(0.01)
    assert result.lobes["LUL"]["ctss"] == 1


def test_totals_and_volumes() -> None:
    # scores 0, 1, 2, 4, 5 -> total 12; voxels of 2 x 1 x 1 mm = 0.002 mL
    lesions = _lesions({"LLL": 300, "RUL": 2500, "RML": 7000, "RLL": 10_000})
    result = severity_from_masks(_lobes(), lesions, _geometry((2.0, 1.0, 1.0)))
    assert {name: result.lobes[name]["ctss"] for name in LOBE_NAMES} == {
        "LUL": 0,
        "LLL": 1,
        "RUL": 2,
        "RML": 4,
        "RLL": 5,
    }
    assert result.total_ctss == 12
    assert result.lobes["RUL"]["lesion_ml"] == pytest.approx(2500 * 0.002)
    assert result.lobes["RUL"]["volume_ml"] == pytest.approx(LOBE_VOXELS * 0.002)
    full = severity_from_masks(_lobes(), np.ones((5, 100, 100), dtype=bool), _geometry())
    assert full.total_ctss == 25
    none = severity_from_masks(_lobes(), np.zeros((5, 100, 100), dtype=bool), _geometry())
    assert none.total_ctss == 0


def test_lesions_outside_the_lobes_do_not_count() -> None:
    lobes = _lobes()
    lobes["LUL"][0, :50] = False  # the lesions in the upper half of slice 0 now lie in no lobe
    lesions = _lesions({"LUL": 5000})
    result = severity_from_masks(lobes, lesions, _geometry())
    assert result.lobes["LUL"]["involvement_pct"] == pytest.approx(0.0)
    assert result.total_ctss == 0


def test_severity_of_a_phantom_matches_what_was_asked() -> None:
    specs = (
        LesionSpec("RLL", "consolidation", 0.3),
        LesionSpec("RLL", "ggo", 0.15, towards=(-1.0, 0.0, 0.0)),
        LesionSpec("LUL", "ggo", 0.1, towards=(0.0, -1.0, 0.0)),
        LesionSpec("LLL", "ggo", 0.03),
    )
    phantom = chest_phantom((38, 128, 128), (8.0, 3.0, 3.0), lesions=specs)
    result = severity_from_masks(phantom.lobes, phantom.lesions, phantom.geometry)
    expected = {"LUL": (10.0, 2), "LLL": (3.0, 1), "RUL": (0.0, 0), "RML": (0.0, 0), "RLL": (45.0, 3)}
    for name, (percent, score) in expected.items():
        assert result.lobes[name]["involvement_pct"] == pytest.approx(percent, abs=0.05)
        assert result.lobes[name]["ctss"] == score
    assert result.total_ctss == 6


@pytest.mark.parametrize("percent", [-0.01, 100.01, float("nan")])
def test_percentages_outside_0_100_are_refused(percent: float) -> None:
    with pytest.raises(ValueError, match="percentage"):
        ctss_from_involvement(percent)


def test_missing_lobes_are_refused() -> None:
    lobes = _lobes()
    del lobes["RML"], lobes["LLL"]
    with pytest.raises(ValueError, match=r"missing: \['LLL', 'RML'\]"):
        severity_from_masks(lobes, _lesions({}), _geometry())


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="'lesions' has shape"):
        severity_from_masks(_lobes(), np.zeros((5, 100, 99), dtype=bool), _geometry())
    lobes = _lobes()
    lobes["RUL"] = lobes["RUL"][:, :, :50]
    with pytest.raises(ValueError, match="'RUL' has shape"):
        severity_from_masks(lobes, _lesions({}), _geometry())


def test_non_boolean_and_empty_masks_are_refused() -> None:
    with pytest.raises(ValueError, match="boolean"):
        severity_from_masks(_lobes(), _lesions({}).astype(np.uint8), _geometry())
    lobes = _lobes()
    lobes["LLL"][:] = False
    with pytest.raises(ValueError, match="LLL is empty"):
        severity_from_masks(lobes, _lesions({}), _geometry())
