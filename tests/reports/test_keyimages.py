"""Key images: level choice, aspect ratio, orientation, overlay colours, legends.

The weight-free images are tested on the chest phantom analysed by the pipeline after painting
known densities into one zone; each phantom is analysed once per module.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image
from pydicom import Dataset
from scipy import ndimage

from models.findings import DENSITY_BAND_LABELS, LOBE_NAMES, REGION_LABELS, ZONE_NAMES, Findings, Volume
from models.phantom import chest_phantom
from models.pipeline import analyse
from models.volume import PatientContext
from reports.keyimages import (
    BAND_ALPHA,
    BAND_COLOURS,
    LEGEND_COLOURS,
    LEGEND_LABELS,
    RIND_LINE_COLOUR,
    SALIENT_PCT,
    WINDOW_LEVEL_HU,
    WINDOW_WIDTH_HU,
    ZONE_COLOURS,
    KeyImage,
    legend_key,
    overlay_regions,
    png_bytes,
    render_key_images,
    select_density_slice,
    select_levels,
)
from tests.reports.helpers import RealSeries


def test_level_of_greatest_lesion_burden(findings: Findings) -> None:
    k, y, reason = select_levels(findings)
    lesions = findings.masks["lesions"]
    assert k == int(lesions.sum(axis=(1, 2)).argmax())
    assert lesions[k].sum() == lesions.sum(axis=(1, 2)).max()
    assert y == int(lesions.sum(axis=(0, 2)).argmax())
    assert reason == "greatest lesion burden"


def test_level_of_largest_lung_area_without_lesions(
    headers: list[Dataset], make_findings: Callable[..., Findings]
) -> None:
    findings = make_findings(headers, lesion=False)
    k, _, reason = select_levels(findings)
    areas = findings.masks["lungs"].sum(axis=(1, 2))
    assert areas[k] == areas.max()
    assert reason == "largest lung area"
    empty = dataclasses.replace(findings, masks={})
    assert select_levels(empty)[:2] == (findings.volume.geometry.shape[0] // 2, findings.volume.geometry.shape[1] // 2)


def test_aspect_ratio_follows_spacing(findings: Findings) -> None:
    axial, coronal = render_key_images(findings)
    nz, ny, nx = findings.volume.geometry.shape
    sz, sy, sx = findings.volume.geometry.spacing
    assert (axial.plane, axial.index, coronal.plane) == ("axial", select_levels(findings)[0], "coronal")
    assert abs(axial.image.size[0] / axial.image.size[1] - nx * sx / (ny * sy)) < 0.05
    assert abs(coronal.image.size[0] / coronal.image.size[1] - nx * sx / (nz * sz)) < 0.05
    assert max(coronal.image.size) <= 512


def _tinted(region: np.ndarray, colour: tuple[int, int, int]) -> int:
    """Pixels of ``region`` whose tint (deviation from grey) is closest to ``colour`` among the legend."""
    deviation = region - region.mean(axis=-1, keepdims=True)
    names = list(LEGEND_COLOURS)
    directions = np.array([np.asarray(LEGEND_COLOURS[n], float) - np.mean(LEGEND_COLOURS[n]) for n in names])
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    scores = deviation @ directions.T
    tinted = np.linalg.norm(deviation, axis=-1) > 15
    best = scores.argmax(axis=-1)
    target = names.index(next(n for n in names if LEGEND_COLOURS[n] == colour))
    return int((tinted & (best == target)).sum())


def _labels(findings: Findings) -> list[str]:
    """Every legend label of the key images of ``findings``, once each, in display order."""
    return list(dict.fromkeys(label for key in render_key_images(findings) for label, _ in key.legend))


def test_radiological_orientation_and_legend(headers: list[Dataset], make_findings: Callable[..., Findings]) -> None:
    findings = make_findings(headers, lobes=False, lesion=False)
    for key in render_key_images(findings):
        pixels = np.asarray(key.image).astype(float)
        half = pixels.shape[1] // 2
        viewer_left, viewer_right = pixels[:, :half], pixels[:, half:]
        assert _tinted(viewer_right, LEGEND_COLOURS["lung_left"]) > 10 * max(
            1, _tinted(viewer_left, LEGEND_COLOURS["lung_left"])
        )
        assert _tinted(viewer_left, LEGEND_COLOURS["lung_right"]) > 10 * max(
            1, _tinted(viewer_right, LEGEND_COLOURS["lung_right"])
        )
    assert _labels(findings) == ["Right lung", "Left lung"]
    full = make_findings(headers)
    assert set(_labels(full)) == {
        "Left upper lobe",
        "Left lower lobe",
        "Right upper lobe",
        "Right lower lobe",
        "Lesion",
    }


def test_lesion_types_get_their_own_colours(findings: Findings) -> None:
    lesions = findings.masks["lesions"]
    core = np.zeros_like(lesions)
    core[2] = lesions[2] & (np.arange(lesions.shape[2])[None, :] < 18)
    typed = dataclasses.replace(
        findings,
        masks={**findings.masks, "ggo": lesions & ~core, "consolidation": core},
        mask_sources={**findings.mask_sources, "ggo": "lesions", "consolidation": "lesions"},
    )
    labels = _labels(typed)
    assert {"Ground-glass opacity", "Consolidation"} <= set(labels) and "Lesion" not in labels
    assert legend_key("ggo") == "ggo" and legend_key("lesions") == "lesion" and legend_key("LUL") == "LUL"
    typed_axial, _ = render_key_images(typed)
    plain_axial, _ = render_key_images(findings)
    assert typed_axial.index == plain_axial.index
    assert _tinted(np.asarray(typed_axial.image).astype(float), LEGEND_COLOURS["ggo"]) > 0
    assert _tinted(np.asarray(plain_axial.image).astype(float), LEGEND_COLOURS["ggo"]) == 0


def test_coronal_has_superior_up(headers: list[Dataset], make_findings: Callable[..., Findings]) -> None:
    findings = make_findings(headers, lobes=True, lesion=False)
    _, coronal = render_key_images(findings)
    pixels = np.asarray(coronal.image).astype(float)
    top, bottom = pixels[: pixels.shape[0] // 2], pixels[pixels.shape[0] // 2 :]
    upper_lobe = LEGEND_COLOURS["LUL"]
    assert _tinted(top, upper_lobe) > 3 * max(1, _tinted(bottom, upper_lobe))


def test_overlay_window_and_png() -> None:
    hu = np.array([[-1400.0, -600.0], [150.0, 400.0]])
    mask = np.array([[False, False], [False, True]])
    rgb = overlay_regions(hu, [(mask, (255, 0, 0))])
    assert rgb[0, 0].tolist() == [0, 0, 0]
    assert abs(int(rgb[0, 1, 0]) - 127) <= 1
    assert rgb[1, 0].tolist() == [255, 255, 255]
    assert rgb[1, 1].tolist() == [255, 0, 0]
    image = Image.open(io.BytesIO(png_bytes(Image.fromarray(rgb))))
    assert image.format == "PNG" and image.size == (2, 2)


def test_real_series_key_images(real: RealSeries) -> None:
    axial, coronal = render_key_images(real.findings)
    assert axial.image.size == (512, 512)
    assert (axial.index, coronal.index) == select_levels(real.findings)[:2]
    assert "greatest lesion burden" in axial.caption
    nz, _, nx = real.findings.volume.geometry.shape
    sz, _, sx = real.findings.volume.geometry.spacing
    assert abs(coronal.image.size[0] / coronal.image.size[1] - nx * sx / (nz * sz)) < 0.02


# --- Weight-free key images: density bands (axial) and zones (coronal) -------------------------

PAINT_RADIUS_MM = 16.0
GROUND_GLASS_SHELL_MM = 22.0


@dataclass(frozen=True)
class Painted:
    """Findings of the chest phantom analysed after painting a ball into one zone."""

    findings: Findings
    zone: str
    centre: tuple[int, int, int]


def _analyse(volume: Volume) -> Findings:
    return analyse(volume, PatientContext(age_years=50.0, sex=None))


def _ball(volume: Volume, centre: tuple[int, int, int], radius_mm: float) -> np.ndarray:
    sz, sy, sx = volume.geometry.spacing
    z, y, x = np.ogrid[: volume.hu.shape[0], : volume.hu.shape[1], : volume.hu.shape[2]]
    inside: np.ndarray = ((z - centre[0]) * sz) ** 2 + ((y - centre[1]) * sy) ** 2 + (
        (x - centre[2]) * sx
    ) ** 2 <= radius_mm**2
    return inside


def _deepest(base: Findings, zone: str) -> tuple[int, int, int]:
    """Voxel of ``zone`` farthest (mm) from any voxel outside it, so that a painted ball stays inside."""
    assert base.densitometry is not None
    depth = ndimage.distance_transform_edt(base.densitometry.zone_map.mask(zone), sampling=base.volume.geometry.spacing)
    assert depth.max() > GROUND_GLASS_SHELL_MM
    z, y, x = np.unravel_index(int(depth.argmax()), depth.shape)
    return int(z), int(y), int(x)


def _flatten(volume: Volume, lungs: np.ndarray) -> Volume:
    """The volume with every lung voxel of -700 HU and above set to well-aerated -850 HU (no involvement)."""
    hu = volume.hu.copy()
    hu[lungs & (hu >= -700.0)] = -850.0
    return dataclasses.replace(volume, hu=hu)


@pytest.fixture(scope="module")
def phantom_base() -> Findings:
    return _analyse(chest_phantom((38, 192, 192), (8.0, 2.0, 2.0)).volume())


@pytest.fixture(scope="module")
def dense(phantom_base: Findings) -> Painted:
    """A consolidation-density ball (+40 HU) with a ground-glass shell (-500 HU) deep in the left
    lower zone, which is not the most involved zone of the unpainted phantom."""
    assert phantom_base.densitometry is not None
    scores = phantom_base.densitometry.zone_scores
    assert max(ZONE_NAMES, key=lambda z: scores[z].involvement_pct or 0.0) != "LL"
    centre = _deepest(phantom_base, "LL")
    zone = phantom_base.densitometry.zone_map.mask("LL")
    hu = phantom_base.volume.hu.copy()
    hu[zone & _ball(phantom_base.volume, centre, GROUND_GLASS_SHELL_MM)] = -500.0
    hu[zone & _ball(phantom_base.volume, centre, PAINT_RADIUS_MM)] = 40.0
    return Painted(_analyse(dataclasses.replace(phantom_base.volume, hu=hu)), "LL", centre)


@pytest.fixture(scope="module")
def emphysema(phantom_base: Findings) -> Painted:
    """An emphysema-like ball (-980 HU) deep in the left upper zone of lungs with no involvement."""
    assert phantom_base.densitometry is not None
    centre = _deepest(phantom_base, "LU")
    volume = _flatten(phantom_base.volume, phantom_base.masks["lungs"])
    hu = volume.hu.copy()
    hu[phantom_base.densitometry.zone_map.mask("LU") & _ball(volume, centre, PAINT_RADIUS_MM)] = -980.0
    return Painted(_analyse(dataclasses.replace(volume, hu=hu)), "LU", centre)


@pytest.fixture(scope="module")
def healthy(phantom_base: Findings) -> Findings:
    """The phantom with no poorly aerated, non-aerated or emphysema-like lung voxel."""
    return _analyse(_flatten(phantom_base.volume, phantom_base.masks["lungs"]))


def _display_pixel(findings: Findings, key: KeyImage, zyx: tuple[int, int, int]) -> np.ndarray:
    """RGB of the displayed pixel over voxel ``zyx`` of a key image: radiological flips from the
    direction cosines, then the scale of the picture to the plane."""
    z, y, x = zyx
    row, rows = (y, findings.volume.hu.shape[1]) if key.plane == "axial" else (z, findings.volume.hu.shape[0])
    columns = findings.volume.hu.shape[2]
    direction = np.asarray(findings.volume.geometry.direction)
    column = columns - 1 - x if direction[0, 0] < 0 else x
    flip_rows = direction[1, 1] < 0 if key.plane == "axial" else direction[2, 2] > 0
    row = rows - 1 - row if flip_rows else row
    width, height = key.image.size
    pixels = np.asarray(key.image).astype(float)
    pixel: np.ndarray = pixels[round((row + 0.5) * height / rows - 0.5), round((column + 0.5) * width / columns - 0.5)]
    return pixel


def _blended(hu: float, colour: tuple[int, int, int]) -> np.ndarray:
    """Lung-window grey of ``hu`` tinted with ``colour`` at the band opacity."""
    grey = float(np.clip((hu - (WINDOW_LEVEL_HU - WINDOW_WIDTH_HU / 2)) / WINDOW_WIDTH_HU, 0.0, 1.0)) * 255.0
    blend: np.ndarray = (1 - BAND_ALPHA) * grey + BAND_ALPHA * np.asarray(colour, dtype=float)
    return blend


def _tint_counts(pixels: np.ndarray, palette: list[tuple[int, int, int]]) -> dict[tuple[int, int, int], int]:
    """How many clearly tinted pixels point towards each palette colour (direction of deviation from grey)."""
    deviation = pixels - pixels.mean(axis=-1, keepdims=True)
    directions = np.array([np.asarray(c, float) - np.mean(c) for c in palette])
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    tinted = np.linalg.norm(deviation, axis=-1) > 15
    best = (deviation @ directions.T).argmax(axis=-1)
    return {colour: int((tinted & (best == n)).sum()) for n, colour in enumerate(palette)}


def _between_markers(key: KeyImage) -> np.ndarray:
    """The picture without its outer tenths, where the yellow R and L markers are."""
    pixels = np.asarray(key.image).astype(float)
    margin = pixels.shape[1] // 10
    return pixels[:, margin:-margin]


def test_axial_shows_the_most_involved_zone_at_the_lesion(dense: Painted) -> None:
    findings = dense.findings
    assert findings.densitometry is not None
    keys = render_key_images(findings)
    assert [key.plane for key in keys] == ["axial", "coronal"]
    axial = keys[0]
    assert axial.index == dense.centre[0]
    assert findings.densitometry.zone_map.labels[axial.index, dense.centre[1], dense.centre[2]] == 6
    involvement = findings.densitometry.zone_scores["LL"].involvement_pct
    assert involvement is not None
    assert "Left lower zone, the most involved zone" in axial.caption
    assert f"({involvement:.1f} % poorly or non-aerated)" in axial.caption
    assert axial.caption.startswith(f"Axial slice {axial.index + 1} of {findings.volume.hu.shape[0]}")
    centre = _display_pixel(findings, axial, dense.centre)
    assert np.abs(centre - _blended(40.0, BAND_COLOURS["non_aerated"])).max() <= 2.0
    assert centre[0] - centre[2] > 80  # clearly tinted, not the grey of +40 HU


def test_a_tie_goes_to_the_earlier_zone_at_its_own_slice(dense: Painted) -> None:
    """RM tied with the painted LL: RM comes first in ZONE_NAMES, and the slice is RM's, not the lesion's."""
    findings = dense.findings
    assert findings.densitometry is not None
    scores = dict(findings.densitometry.zone_scores)
    scores["RM"] = dataclasses.replace(scores["RM"], involvement_pct=scores["LL"].involvement_pct)
    tied = dataclasses.replace(findings, densitometry=dataclasses.replace(findings.densitometry, zone_scores=scores))
    axial = render_key_images(tied)[0]
    assert "Right middle zone, the most involved zone" in axial.caption
    labels = findings.densitometry.zone_map.labels
    hu = findings.volume.hu
    involved = (labels == ZONE_NAMES.index("RM") + 1) & (hu >= -700.0) & (hu < 100.0)
    per_slice = np.count_nonzero(involved, axis=(1, 2))
    assert per_slice[axial.index] == per_slice.max() > 0
    assert not (labels[axial.index] == ZONE_NAMES.index("LL") + 1).any()


def test_axial_legend_matches_the_bands_drawn(dense: Painted) -> None:
    axial = render_key_images(dense.findings)[0]
    assert axial.legend == (
        (DENSITY_BAND_LABELS["poorly_aerated"], BAND_COLOURS["poorly_aerated"]),
        (DENSITY_BAND_LABELS["non_aerated"], BAND_COLOURS["non_aerated"]),
    )
    counts = _tint_counts(_between_markers(axial), list(BAND_COLOURS.values()))
    drawn = {colour for colour, count in counts.items() if count > 20}
    assert drawn == {colour for _, colour in axial.legend}
    assert counts[BAND_COLOURS["emphysema"]] == 0


def test_emphysema_only_shows_the_most_emphysematous_zone(emphysema: Painted) -> None:
    findings = emphysema.findings
    assert findings.densitometry is not None
    assert all(s.involvement_pct == 0.0 for s in findings.densitometry.zone_scores.values())
    laa = findings.densitometry.regions["LU"].laa950_pct
    assert laa is not None and laa > 0.0
    axial = render_key_images(findings)[0]
    lung_area = np.count_nonzero(findings.densitometry.zone_map.labels, axis=(1, 2))
    assert axial.index == emphysema.centre[0] != int(lung_area.argmax())
    assert f"Left upper zone, the most emphysematous zone (LAA-950 {laa:.1f} %)" in axial.caption
    assert "no zone has poorly or non-aerated lung" in axial.caption
    assert axial.legend == ((DENSITY_BAND_LABELS["emphysema"], BAND_COLOURS["emphysema"]),)
    centre = _display_pixel(findings, axial, emphysema.centre)
    assert np.abs(centre - _blended(-980.0, BAND_COLOURS["emphysema"])).max() <= 2.0


def test_without_any_finding_the_largest_lung_area(healthy: Findings) -> None:
    assert healthy.densitometry is not None
    axial = render_key_images(healthy)[0]
    lung_area = np.count_nonzero(healthy.densitometry.zone_map.labels, axis=(1, 2))
    assert lung_area[axial.index] == lung_area.max()
    assert "largest lung area; no zone has poorly aerated, non-aerated or emphysema-like lung" in axial.caption
    assert axial.legend == ()
    counts = _tint_counts(_between_markers(axial), list(BAND_COLOURS.values()))
    assert max(counts.values()) == 0


def test_coronal_shows_the_six_zones_and_the_rind(dense: Painted) -> None:
    findings = dense.findings
    assert findings.densitometry is not None
    zone_map = findings.densitometry.zone_map
    coronal = render_key_images(findings)[1]
    lung_rows = np.count_nonzero(zone_map.labels, axis=(0, 2))
    assert coronal.plane == "coronal" and lung_rows[coronal.index] == lung_rows.max()
    assert coronal.caption.startswith(f"Coronal reformat through row {coronal.index + 1} (largest lung area)")
    assert coronal.legend[:6] == tuple((f"{REGION_LABELS[zone]} ({zone})", ZONE_COLOURS[zone]) for zone in ZONE_NAMES)
    assert coronal.legend[6:] == (("Core/rind boundary (dotted), 10 mm inside the lung surface", RIND_LINE_COLOUR),)
    pixels = np.asarray(coronal.image)
    for zone in ZONE_NAMES:
        exact = np.all(pixels == np.asarray(ZONE_COLOURS[zone], dtype=np.uint8), axis=-1)
        assert exact.sum() >= 20, zone
    counts = _tint_counts(_between_markers(coronal), list(ZONE_COLOURS.values()))
    assert min(counts.values()) > 100
    # Superior up: the upper zones' outlines lie above the lower zones'.
    rows = {zone: np.nonzero(np.all(pixels == ZONE_COLOURS[zone], axis=-1))[0].mean() for zone in ZONE_NAMES}
    assert rows["RU"] < rows["RM"] < rows["RL"] and rows["LU"] < rows["LM"] < rows["LL"]


def test_rind_line_is_the_only_difference_without_a_rind(dense: Painted) -> None:
    findings = dense.findings
    assert findings.densitometry is not None
    zone_map = findings.densitometry.zone_map
    no_rind = dataclasses.replace(
        findings,
        densitometry=dataclasses.replace(
            findings.densitometry, zone_map=dataclasses.replace(zone_map, rind=np.zeros_like(zone_map.rind))
        ),
    )
    with_line, without_line = render_key_images(findings)[1], render_key_images(no_rind)[1]
    assert without_line.legend == with_line.legend[:6]
    changed = np.any(np.asarray(with_line.image) != np.asarray(without_line.image), axis=-1)
    assert changed.sum() > 50
    assert np.all(np.asarray(with_line.image)[changed] == RIND_LINE_COLOUR)


def test_learned_masks_keep_todays_key_images(dense: Painted) -> None:
    """A site with lesion weights: the weight-free images first, then today's images, unchanged."""
    findings = dense.findings
    ball = _ball(findings.volume, dense.centre, PAINT_RADIUS_MM) & findings.masks["lungs"]
    source = findings.mask_sources["lungs"]
    learned = dataclasses.replace(
        findings,
        masks={**findings.masks, "lesions": ball},
        mask_sources={**findings.mask_sources, "lesions": source},
    )
    keys = render_key_images(learned)
    today = render_key_images(dataclasses.replace(learned, densitometry=None))
    assert [key.plane for key in keys] == ["axial", "coronal", "axial", "coronal"]
    assert [key.plane for key in today] == ["axial", "coronal"]
    assert "most involved zone" in keys[0].caption and keys[1].legend[0][0] == "Right upper zone (RU)"
    for key, before in zip(keys[2:], today, strict=True):
        assert (key.index, key.caption, key.legend) == (before.index, before.caption, before.legend)
        assert np.array_equal(np.asarray(key.image), np.asarray(before.image))
    assert "greatest lesion burden" in keys[2].caption
    assert [label for label, _ in keys[2].legend] == ["Right lung", "Left lung", "Lesion"]
    assert len(render_key_images(findings)) == 2  # lung masks alone are not learned masks


def test_without_densitometry_todays_two_images(findings: Findings) -> None:
    """No densitometry: the two mask images, each with the legend of the layers crossing it."""
    assert findings.densitometry is None
    keys = render_key_images(findings)
    k, y, reason = select_levels(findings)
    assert [(key.plane, key.index) for key in keys] == [("axial", k), ("coronal", y)]
    assert [key.caption for key in keys] == [
        f"Axial slice {k + 1} of {findings.volume.hu.shape[0]} ({reason})",
        f"Coronal reformat through row {y + 1} ({reason})",
    ]
    assert [label for label, _ in keys[0].legend] == ["Left lower lobe", "Right lower lobe", "Lesion"]
    every_layer = [
        (LEGEND_LABELS[legend_key(name)], LEGEND_COLOURS[legend_key(name)])
        for name in (*LOBE_NAMES, "lesions")
        if name in findings.masks and findings.masks[name].any()
    ]
    assert set(keys[1].legend) == set(every_layer)
    # Every layer of the volume is a candidate; an image draws (and lists) only those crossing it.
    # Similar hues (two lobes' oranges) mix at a few resampled pixels, hence a count, not > 0.
    palette = [colour for _, colour in every_layer]
    for key in keys:
        counts = _tint_counts(_between_markers(key), palette)
        assert {colour for colour, count in counts.items() if count > 20} == {colour for _, colour in key.legend}


def test_emphysema_wins_over_involvement_below_the_salient_share(emphysema: Painted) -> None:
    """Vessels and partial volume give every real zone a few % of involvement: below 5 % the
    emphysematous zone is shown when its LAA-950 reaches 5 %; at 5 % involvement the involved zone is."""
    d = emphysema.findings.densitometry
    assert d is not None
    regions = {**d.regions, "LU": dataclasses.replace(d.regions["LU"], laa950_pct=12.0)}

    def chosen(involvement: dict[str, float]) -> str:
        scores = {z: dataclasses.replace(s, involvement_pct=involvement.get(z, 3.0)) for z, s in d.zone_scores.items()}
        changed = dataclasses.replace(d, zone_scores=scores, regions=regions)
        return select_density_slice(emphysema.findings, changed)[1]

    rule = chosen({})
    assert rule.startswith("Left upper zone, the most emphysematous zone (LAA-950 12.0 %)"), rule
    assert f"no zone is {SALIENT_PCT:g} % or more poorly or non-aerated" in rule
    assert chosen({"RM": SALIENT_PCT}).startswith("Right middle zone, the most involved zone (5.0 %")
