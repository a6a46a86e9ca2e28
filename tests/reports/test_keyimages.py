"""Key images: level choice, aspect ratio, orientation, overlay colours."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable

import numpy as np
from PIL import Image
from pydicom import Dataset

from models.findings import Findings
from reports.keyimages import (
    LEGEND_COLOURS,
    legend_entries,
    legend_key,
    overlay_regions,
    png_bytes,
    render_key_images,
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
    assert [label for label, _ in legend_entries(findings)] == ["Right lung", "Left lung"]
    full = make_findings(headers)
    assert [label for label, _ in legend_entries(full)] == [
        "Left upper lobe",
        "Left lower lobe",
        "Right upper lobe",
        "Right lower lobe",
        "Lesion",
    ]


def test_lesion_types_get_their_own_colours(findings: Findings) -> None:
    lesions = findings.masks["lesions"]
    core = np.zeros_like(lesions)
    core[2] = lesions[2] & (np.arange(lesions.shape[2])[None, :] < 18)
    typed = dataclasses.replace(
        findings,
        masks={**findings.masks, "ggo": lesions & ~core, "consolidation": core},
        mask_sources={**findings.mask_sources, "ggo": "lesions", "consolidation": "lesions"},
    )
    labels = [label for label, _ in legend_entries(typed)]
    assert labels[-2:] == ["Ground-glass opacity", "Consolidation"] and "Lesion" not in labels
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
