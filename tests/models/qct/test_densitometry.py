"""models.qct.densitometry on the densitometry phantom, against truth built from its materials.

The lung masks are the phantom's own (so segmentation is not under test).  Every truth here comes
from the phantom's material map, its ball fractions and its lung boxes, never from the HU the code
reads:

- zones: each box lung's slices split into thirds by equal height (slice ``j`` from the foot end of
  ``n`` is in third ``floor(3 (2j + 1) / (2n))``; see tests/models/qct/test_zones.py);
- rind: a voxel of a box lung is in the rind when ``min_a`` (layers to the nearer face on axis ``a``,
  itself included) x spacing ``<= 10 mm`` (the nearest outside voxel of an axis-aligned box is
  straight across one face; the lungs are far from the array edges and from each other);
- bands: each crisp material has one HU and so one band (parenchyma -850 well aerated, vessel +200
  other, consolidation +30 and the ball's core +40 non-aerated, ground glass -500 poorly aerated,
  emphysema -980 emphysema-like).  A voxel a fraction ``f`` inside the ball is
  ``40 f + (-850)(1 - f)`` HU, which crosses the edge ``e`` at ``f_e = (e + 850) / 890``: -700 HU at
  ``f = 150/890 = 0.169`` and -250 HU at ``f = 600/890 = 0.674`` (the -950 and +100 HU edges need
  ``f < 0`` or ``f > 1``).  The fractions are multiples of 1/512 (8 x 8 x 8 sub-samples) and none
  lies within 0.1 HU of an edge (checked below), so float32 rounding cannot move a voxel across it
  and the count per band is exact;
- mass: ``(HU + 1000) / 1000`` g/mL x voxel volume summed in float64 from the materials' HU.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.findings import (
    DENSITY_BAND_RANGES_HU,
    DENSITY_BANDS,
    RIND_THICKNESS_MM,
    ZONE_NAMES,
    ZONE_REGIONS,
    Densitometry,
)
from models.phantom import (
    D1_CLUSTERS,
    DENSITOMETRY_MATERIALS,
    DensitometryPhantom,
    chest_phantom,
    densitometry_phantom,
)
from models.pipeline import analyse
from models.qct.densitometry import analyse_densitometry
from models.volume import PatientContext

MATERIALS = list(DENSITOMETRY_MATERIALS)
#: Band of each crisp material, from its HU and the published edges (written out, not computed by the code).
MATERIAL_BAND = {
    "parenchyma": "well_aerated",
    "ground_glass": "poorly_aerated",
    "consolidation": "non_aerated",
    "emphysema": "emphysema",
    "vessel": "other",
}
PARENCHYMA_HU = DENSITOMETRY_MATERIALS["parenchyma"]
BALL_HU = DENSITOMETRY_MATERIALS["dense_ball"]
#: Ball fraction at which a partial-volume voxel reaches each band's lower edge.
F_POORLY = (DENSITY_BAND_RANGES_HU["poorly_aerated"][0] + 850.0) / (BALL_HU - PARENCHYMA_HU)  # type: ignore[operator]
F_NON = (DENSITY_BAND_RANGES_HU["non_aerated"][0] + 850.0) / (BALL_HU - PARENCHYMA_HU)  # type: ignore[operator]


def pan_score(involvement_pct: float) -> int:
    """Pan et al.'s 0-5 per zone as seed 003 gives it: 0 none, 1 < 5 %, 2 5-25, 3 26-50, 4 51-75, 5 76-100."""
    if involvement_pct == 0.0:
        return 0
    if involvement_pct < 5.0:
        return 1
    return 2 if involvement_pct <= 25.0 else 3 if involvement_pct <= 50.0 else 4 if involvement_pct <= 75.0 else 5


class Truth:
    """Zone, rind and band of every voxel of the phantom, from its materials and boxes alone."""

    def __init__(self, phantom: DensitometryPhantom) -> None:
        shape = phantom.hu.shape
        self.voxel_ml = phantom.geometry.voxel_volume_ml
        self.zone = np.zeros(shape, dtype=np.uint8)
        self.rind = np.zeros(shape, dtype=bool)
        for lung, box in phantom.lung_boxes.items():
            names = ("RL", "RM", "RU") if lung == "lung_right" else ("LL", "LM", "LU")
            first, stop = box[0].start, box[0].stop
            for k in range(first, stop):  # the phantom is head first: index grows towards the head
                third = (3 * (2 * (k - first) + 1)) // (2 * (stop - first))
                self.zone[k, box[1], box[2]] = ZONE_NAMES.index(names[third]) + 1
            depth = np.full([s.stop - s.start for s in box], np.inf)
            for axis, (s, step) in enumerate(zip(box, phantom.geometry.spacing, strict=True)):
                n = s.stop - s.start
                layers = np.minimum(np.arange(n) + 1, n - np.arange(n)) * step
                depth = np.minimum(depth, layers.reshape([-1 if a == axis else 1 for a in range(3)]))
            self.rind[box] = depth <= RIND_THICKNESS_MM
        material = phantom.material
        self.band = np.full(shape, "", dtype=object)
        for name, band in MATERIAL_BAND.items():
            self.band[material == MATERIALS.index(name)] = band
        f = phantom.ball_fraction.astype(np.float64)
        ball = material == MATERIALS.index("dense_ball")
        self.band[ball & (f < F_POORLY)] = "well_aerated"
        self.band[ball & (f >= F_POORLY) & (f < F_NON)] = "poorly_aerated"
        self.band[ball & (f >= F_NON)] = "non_aerated"
        hu = np.array([DENSITOMETRY_MATERIALS[name] for name in MATERIALS], dtype=np.float64)[material]
        hu[ball] = BALL_HU * f[ball] + PARENCHYMA_HU * (1.0 - f[ball])
        self.hu = hu

    def region(self, name: str) -> np.ndarray:
        if name in ZONE_NAMES:
            zone: np.ndarray = self.zone == ZONE_NAMES.index(name) + 1
            return zone
        lungs = self.zone > 0
        shell: np.ndarray = lungs & self.rind if name == "rind" else lungs & ~self.rind
        return shell

    def counts(self, name: str) -> dict[str, int]:
        bands = self.band[self.region(name)]
        return {band: int(np.count_nonzero(bands == band)) for band in DENSITY_BANDS}


@pytest.fixture(scope="module")
def phantom() -> DensitometryPhantom:
    return densitometry_phantom()


@pytest.fixture(scope="module")
def truth(phantom: DensitometryPhantom) -> Truth:
    return Truth(phantom)


@pytest.fixture(scope="module")
def result(phantom: DensitometryPhantom) -> Densitometry:
    return analyse_densitometry(phantom.volume(), phantom.left, phantom.right, "classical_lung_mask")


def _counts(result: Densitometry, region: str) -> dict[str, int]:
    """Band voxel counts of a measured region (volumes are whole voxels)."""
    voxel_ml = result.regions[region].volume_ml / max(result.regions[region].voxel_count, 1)
    return {b: round(v.volume_ml / voxel_ml) for b, v in result.regions[region].density_bands.items()}


def test_truth_is_what_the_phantom_documents(phantom: DensitometryPhantom, truth: Truth) -> None:
    """The layout claims the other tests rely on, checked on the truth itself."""
    material = phantom.material
    for name, zone in (("vessel", "RU"), ("consolidation", "RM"), ("ground_glass", "LM"), ("emphysema", "LU")):
        voxels = material == MATERIALS.index(name)
        assert voxels.any() and np.all(truth.region(zone)[voxels]), f"{name} is not all in {zone}"
    consolidation = material == MATERIALS.index("consolidation")
    assert np.all(truth.rind[consolidation])  # all of it in the rind
    ball = phantom.ball_fraction > 0
    assert np.all(truth.region("RL")[ball]) and not np.any(truth.rind[ball])  # in RL's core
    assert int(np.count_nonzero(material == MATERIALS.index("emphysema"))) == sum(s * n for s, n in D1_CLUSTERS)
    # no partial-volume voxel within 0.1 HU of a band edge: the exact counts below cannot flip on rounding
    f = phantom.ball_fraction[ball].astype(np.float64)
    ball_hu = BALL_HU * f + PARENCHYMA_HU * (1.0 - f)
    for edge in (-700.0, -250.0):
        assert np.min(np.abs(ball_hu - edge)) > 0.1
    assert np.all(f * 512 == np.round(f * 512))


def test_zone_volumes_equal_their_boxes(phantom: DensitometryPhantom, truth: Truth, result: Densitometry) -> None:
    """Right lung 72 slices (24 per third), left 66 (22): each zone is its slab of its box."""
    for name in ZONE_NAMES:
        expected = int(np.count_nonzero(truth.region(name)))
        assert result.regions[name].voxel_count == expected
        assert result.regions[name].volume_ml == pytest.approx(expected * truth.voxel_ml)
        np.testing.assert_array_equal(result.zone_map.mask(name), truth.region(name))
    assert result.regions["RU"].voxel_count == 24 * 44 * 42
    assert result.regions["LU"].voxel_count == 22 * 44 * 42


def test_band_volumes_per_zone_and_shell(truth: Truth, result: Densitometry) -> None:
    """Every band of every zone region equals the material truth, voxel for voxel."""
    for name in ZONE_REGIONS:
        measured = _counts(result, name)
        assert measured == truth.counts(name), name
        assert sum(measured.values()) == result.regions[name].voxel_count
        shares = [v.pct for v in result.regions[name].density_bands.values()]
        assert sum(s or 0.0 for s in shares) == pytest.approx(100.0)


def test_each_material_lands_in_its_zone_and_band(phantom: DensitometryPhantom, result: Densitometry) -> None:
    """Vessel -> RU other; consolidation -> RM non-aerated, all in the rind; ground glass -> LM poorly aerated;
    emphysema -> LU emphysema-like; LL all well aerated."""
    material = phantom.material

    def n(name: str) -> int:
        return int(np.count_nonzero(material == MATERIALS.index(name)))

    assert _counts(result, "RU")["other"] == n("vessel") == 3 * 3 * 24
    assert _counts(result, "RM")["non_aerated"] == n("consolidation") == 20 * 20 * 4
    assert _counts(result, "rind")["non_aerated"] == n("consolidation")
    assert _counts(result, "LM")["poorly_aerated"] == n("ground_glass") == 22 * 22 * 25
    assert _counts(result, "LU")["emphysema"] == n("emphysema")
    ll = _counts(result, "LL")
    assert ll["well_aerated"] == result.regions["LL"].voxel_count


def test_dense_ball_within_its_partial_volume_tolerance(phantom: DensitometryPhantom, result: Densitometry) -> None:
    """RL's non-aerated band holds the ball to within its partial-volume voxels.

    Exactly: voxels with ``f >= 600/890`` are non-aerated, ``150/890 <= f < 600/890`` poorly
    aerated.  Against the ball's volume 4/3 pi r^3: the non-aerated count differs from the ball's
    sum of fractions by at most one voxel per partial voxel (each adds ``1 - f`` or misses ``f``),
    and that sum differs from 4/3 pi r^3 by the 8^3 sub-sampling of the partial voxels, again at
    most their number; so the tolerance is the partial voxels' count x voxel volume.
    """
    f = phantom.ball_fraction.astype(np.float64)
    rl = _counts(result, "RL")
    assert rl["non_aerated"] == int(np.count_nonzero(f >= F_NON))
    assert rl["poorly_aerated"] == int(np.count_nonzero((f >= F_POORLY) & (f < F_NON)))
    voxel_ml = phantom.geometry.voxel_volume_ml
    partial = int(np.count_nonzero((f > 0) & (f < 1)))
    non_ml = result.regions["RL"].density_bands["non_aerated"].volume_ml
    assert abs(non_ml - phantom.ball_volume_ml) <= partial * voxel_ml
    assert phantom.ball_volume_ml == pytest.approx(4.0 / 3.0 * math.pi * 12.0**3 / 1000.0)
    assert abs(float(f.sum()) * voxel_ml - phantom.ball_volume_ml) <= partial * voxel_ml


def test_zone_scores_and_total(truth: Truth, result: Densitometry) -> None:
    """Score of each zone from the truth's share of poorly + non-aerated voxels and Pan's thresholds."""
    total = 0
    for name in ZONE_NAMES:
        counts = truth.counts(name)
        involvement = 100.0 * (counts["poorly_aerated"] + counts["non_aerated"]) / sum(counts.values())
        score = result.zone_scores[name]
        assert score.involvement_pct == pytest.approx(involvement, abs=1e-12)
        assert score.score == pan_score(involvement), name
        assert score.volume_ml == pytest.approx(sum(counts.values()) * truth.voxel_ml)
        total += pan_score(involvement)
    assert result.zone_score_total == total
    # the phantom exercises more than one score: RU and LL are 0, RL (ball) 1, LM (ground glass, 29.8 %) 3
    assert {result.zone_scores[n].score for n in ZONE_NAMES} >= {0, 1, 3}


def test_core_and_rind_make_the_lungs(phantom: DensitometryPhantom, truth: Truth, result: Densitometry) -> None:
    lungs = int(np.count_nonzero(phantom.left | phantom.right))
    core, rind = result.regions["core"], result.regions["rind"]
    assert core.voxel_count + rind.voxel_count == lungs
    assert rind.voxel_count == int(np.count_nonzero(truth.rind))
    np.testing.assert_array_equal(result.zone_map.rind, truth.rind)
    for band in DENSITY_BANDS:
        zones = sum(result.regions[n].density_bands[band].volume_ml for n in ZONE_NAMES)
        shells = core.density_bands[band].volume_ml + rind.density_bands[band].volume_ml
        assert shells == pytest.approx(zones)
    # analytic per box lung: shrink by floor(10 / spacing) layers per face -> (4, 5, 5) at (2.5, 2, 2) mm
    core_expected = sum(
        math.prod(s.stop - s.start - 2 * layers for s, layers in zip(box, (4, 5, 5), strict=True))
        for box in phantom.lung_boxes.values()
    )
    assert core.voxel_count == core_expected


def test_well_aerated_share(truth: Truth, result: Densitometry) -> None:
    lungs = truth.zone > 0
    expected = 100.0 * int(np.count_nonzero(truth.band[lungs] == "well_aerated")) / int(np.count_nonzero(lungs))
    assert result.well_aerated_pct == pytest.approx(expected, abs=1e-12)
    assert result.well_aerated_cutoff_pct == 71.0
    assert result.below_well_aerated_cutoff is (expected < 71.0)


def test_mass_of_each_region(truth: Truth, result: Densitometry) -> None:
    """Analytic float64 sum; tolerance: float32 HU carry at most ~2^-22 x 1000 HU of rounding per voxel."""
    for name in ZONE_REGIONS:
        region = truth.region(name)
        expected = float(np.sum((truth.hu[region] + 1000.0) / 1000.0)) * truth.voxel_ml
        voxels = int(np.count_nonzero(region))
        tolerance = voxels * (1000.0 * 2.0**-22) / 1000.0 * truth.voxel_ml
        mass = result.regions[name].mass_g
        assert mass is not None and abs(mass - expected) <= tolerance, name
    zones = sum(result.regions[n].mass_g or 0.0 for n in ZONE_NAMES)
    assert zones == pytest.approx((result.regions["core"].mass_g or 0.0) + (result.regions["rind"].mass_g or 0.0))


def test_emphysema_detail(result: Densitometry) -> None:
    """D = 1 from the LU population (to floating point); no LAA in the lower zones, so no ratio, with a note."""
    e = result.emphysema
    assert e.cluster_count == sum(n for _, n in D1_CLUSTERS)
    assert e.cluster_exponent_d is not None and abs(e.cluster_exponent_d - 1.0) < 1e-12
    assert e.upper_lower_ratio is None
    assert any("lower zones" in note for note in e.notes)


def test_deterministic(phantom: DensitometryPhantom, result: Densitometry) -> None:
    again = analyse_densitometry(phantom.volume(), phantom.left, phantom.right, "classical_lung_mask")
    np.testing.assert_array_equal(again.zone_map.labels, result.zone_map.labels)
    np.testing.assert_array_equal(again.zone_map.rind, result.zone_map.rind)
    assert {n: m.as_dict() for n, m in again.regions.items()} == {n: m.as_dict() for n, m in result.regions.items()}
    assert again.zones_dict() == result.zones_dict()
    assert again.emphysema_dict(None) == result.emphysema_dict(None)


def test_empty_lungs_raise(phantom: DensitometryPhantom) -> None:
    empty = np.zeros_like(phantom.left)
    with pytest.raises(ValueError, match="empty"):
        analyse_densitometry(phantom.volume(), empty, empty, "classical_lung_mask")


def test_one_lung_missing_leaves_the_total_undefined(phantom: DensitometryPhantom) -> None:
    """Without the left lung its zones are empty: their scores and the total are None, with a note."""
    result = analyse_densitometry(phantom.volume(), np.zeros_like(phantom.left), phantom.right, "classical_lung_mask")
    assert result.zone_score_total is None
    assert all(result.zone_scores[n].score is None for n in ("LU", "LM", "LL"))
    assert any("LU, LM, LL are empty" in note for note in result.notes)


def test_findings_carry_the_densitometry_as_weight_free() -> None:
    """Through the pipeline: result.json has zones, emphysema, acquisition, headline and every zone region."""
    phantom = chest_phantom((38, 192, 192), (8.0, 2.0, 2.0))
    findings = analyse(phantom.volume(), PatientContext(age_years=50.0, sex=None))
    assert findings.densitometry is not None
    out = findings.as_dict()
    for key in ("zones", "emphysema", "acquisition", "headline"):
        assert key in out, key
    for name in ZONE_REGIONS:
        entry = out["measurements"][name]
        assert entry["provenance"] == "weight_free", name
        assert set(entry["density_bands"]) == set(DENSITY_BANDS)
    assert out["zones"]["provenance"] == "weight_free" and out["emphysema"]["provenance"] == "weight_free"
    assert set(out["zones"]["zones"]) == set(ZONE_NAMES)
    lungs = findings.measurements["lungs"]
    assert sum(out["measurements"][n]["voxel_count"] for n in ZONE_NAMES) == lungs.voxel_count
    assert out["headline"]["zone_score_total"] == out["zones"]["total"]
    assert out["headline"]["lung_volume_ml"] == lungs.volume_ml
    assert any("not read from DICOM" in c for c in out["acquisition"]["caveats"])
