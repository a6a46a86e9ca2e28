"""models.qct.bands: band edges, counts that add up, the mass formula by hand, an empty region.

The truths are the published edges of :data:`models.findings.DENSITY_BAND_RANGES_HU` (each band
``[low, high)``, so a voxel exactly on an edge belongs to the band above it) and the density-to-mass
relation (air -1000 HU is 0 g/mL, water 0 HU is 1 g/mL, linear in between and beyond).
"""

from __future__ import annotations

import numpy as np
import pytest

from models.findings import DENSITY_BANDS, Geometry
from models.qct.bands import band_counts, band_volumes, mass_g
from models.qct.measurements import measure_values

#: (HU, band): every edge, each side of it, and values far out, written from the published scheme.
EDGE_CASES: tuple[tuple[float, str], ...] = (
    (-3024.0, "emphysema"),
    (-1000.0, "emphysema"),
    (-950.5, "emphysema"),
    (-950.0, "well_aerated"),
    (-850.0, "well_aerated"),
    (-700.5, "well_aerated"),
    (-700.0, "poorly_aerated"),
    (-500.0, "poorly_aerated"),
    (-250.5, "poorly_aerated"),
    (-250.0, "non_aerated"),
    (0.0, "non_aerated"),
    (99.5, "non_aerated"),
    (100.0, "other"),
    (3071.0, "other"),
)


@pytest.mark.parametrize(
    ("hu", "band", "dtype"),
    [
        (hu, band, dtype)
        for dtype in (np.float32, np.float64, np.int16)
        for hu, band in EDGE_CASES
        if dtype is not np.int16 or hu == int(hu)  # an int16 image holds whole HU only
    ],
)
def test_each_value_falls_in_its_band(hu: float, band: str, dtype: type) -> None:
    """One voxel lands in exactly its band whatever the array type."""
    counts = band_counts(np.array([hu], dtype=dtype))
    assert counts == {name: int(name == band) for name in DENSITY_BANDS}


def test_just_below_each_edge_in_float32_stays_below() -> None:
    """The nearest float32 below each edge is in the band below: no rounding moves an edge."""
    edges = {-950.0: "emphysema", -700.0: "well_aerated", -250.0: "poorly_aerated", 100.0: "non_aerated"}
    for edge, below in edges.items():
        value = np.nextafter(np.float32(edge), np.float32(-np.inf))
        assert band_counts(np.array([value], dtype=np.float32))[below] == 1


def test_counts_add_up_to_the_size_in_band_order() -> None:
    """Counts of a noisy 3-D array add up to its size and match a count of each range by comparison."""
    values = np.random.default_rng(7).normal(-600.0, 500.0, size=(7, 11, 13)).astype(np.float32)
    counts = band_counts(values)
    assert tuple(counts) == DENSITY_BANDS
    assert sum(counts.values()) == values.size
    expected = {
        "emphysema": np.count_nonzero(values < -950),
        "well_aerated": np.count_nonzero((values >= -950) & (values < -700)),
        "poorly_aerated": np.count_nonzero((values >= -700) & (values < -250)),
        "non_aerated": np.count_nonzero((values >= -250) & (values < 100)),
        "other": np.count_nonzero(values >= 100),
    }
    assert counts == expected
    assert all(n > 0 for n in counts.values())  # the sample reaches every band, so none is vacuous


def test_band_volumes_and_shares() -> None:
    """Volume is count x voxel volume; shares are of the region and add up to 100 %."""
    counts = {"emphysema": 1, "well_aerated": 6, "poorly_aerated": 2, "non_aerated": 1, "other": 0}
    volumes = band_volumes(counts, 0.5)
    assert {b: v.volume_ml for b, v in volumes.items()} == {b: 0.5 * n for b, n in counts.items()}
    assert {b: v.pct for b, v in volumes.items()} == pytest.approx({b: 10.0 * n for b, n in counts.items()})
    assert sum(v.pct or 0.0 for v in volumes.values()) == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("values", "voxel_ml", "grams"),
    [
        ([0.0] * 1000, 0.001, 1.0),  # 1 mL of water is 1 g
        ([-1000.0] * 10, 1.0, 0.0),  # air weighs nothing
        ([-500.0, 0.0, 100.0], 0.5, (0.5 + 1.0 + 1.1) * 0.5),  # by hand: 0.5, 1.0 and 1.1 g/mL x 0.5 mL
        ([-1100.0, -900.0], 2.0, 0.0),  # noise below air is not clipped: -0.1 and +0.1 g/mL cancel
        ([40.0], 0.01, 0.0104),  # soft tissue at 40 HU: 1.04 g/mL x 0.01 mL
    ],
)
def test_mass_against_hand_computation(values: list[float], voxel_ml: float, grams: float) -> None:
    assert mass_g(np.array(values, dtype=np.float32), voxel_ml) == pytest.approx(grams, abs=1e-9)


def test_mass_equals_volume_times_mean_density() -> None:
    """The module's claim: the mass of a region is its volume times (mean HU + 1000) / 1000."""
    values = np.random.default_rng(3).normal(-800.0, 150.0, size=5000).astype(np.float32)
    mean = float(np.mean(values, dtype=np.float64))
    assert mass_g(values, 0.002) == pytest.approx(values.size * 0.002 * (mean + 1000.0) / 1000.0, rel=1e-12)


def test_empty_region() -> None:
    """No voxels: every band count 0, shares None (a share of nothing does not exist), mass 0 g."""
    empty = np.array([], dtype=np.float32)
    counts = band_counts(empty)
    assert counts == dict.fromkeys(DENSITY_BANDS, 0)
    volumes = band_volumes(counts, 0.01)
    assert all(v.volume_ml == 0.0 and v.pct is None for v in volumes.values())
    assert mass_g(empty, 0.01) == 0.0
    geometry = Geometry(
        (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)), (1, 1, 1)
    )
    measured = measure_values(empty, geometry, "RU")
    assert measured.voxel_count == 0 and measured.mass_g == 0.0
    assert set(measured.density_bands) == set(DENSITY_BANDS)
    assert all(v.volume_ml == 0.0 and v.pct is None for v in measured.density_bands.values())
    assert measured.as_dict()["density_bands"]["emphysema"] == {"volume_ml": 0.0, "pct": None}
