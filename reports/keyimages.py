"""Key images for the PDF: where the finding is, on an axial slice and a coronal reformat.

What is shown
-------------
With the weight-free densitometry (``Findings.densitometry``) the key images are, in display order:

1. **Density bands, axial.**  The slice is chosen to show the finding (:func:`select_density_slice`):
   the most involved zone (highest share of poorly or non-aerated lung, ties broken in
   :data:`ZONE_NAMES` order), at that zone's slice with the most poorly or non-aerated voxels;
   when no zone is involved, the most emphysematous zone (highest LAA-950) at its slice with the
   most voxels below -950 HU; else the slice with the largest lung area.  The caption names the
   rule, the zone in words and its number.  Inside the lungs each density band that marks disease
   gets a translucent fill (:data:`BAND_COLOURS`, opacity :data:`BAND_ALPHA`): emphysema-like,
   poorly aerated (ground-glass density) and non-aerated (consolidation density).  Well-aerated
   lung is left uncoloured because it is the normal background against which disease is read:
   tinting it would wash over the whole lung and hide the grey-scale texture (vessels, fissures,
   faint ground glass) that a radiologist checks the colours against, and "no colour" then means
   "normally aerated".  Voxels of +100 HU and above are not parenchyma (contrast-filled vessels,
   calcification) and are already white in the lung window, so they are not coloured either.
   The fill is not outlined: band membership changes voxel by voxel with noise, and outlines
   would turn it into clutter.  Vessels of soft-tissue density are coloured as non-aerated,
   because the densitometry counts them so; the picture shows exactly what the numbers count.
2. **Zones, coronal**, through the row with the largest lung area: the six zones
   (:data:`ZONE_COLOURS`, translucent fill with a solid outline in the same colour) and the
   boundary between the central core and the peripheral rind as a dotted white line
   (:data:`RIND_LINE_COLOUR`).  The line is dotted so that it reads as an annotation and never
   as a fissure or a vessel.
3. **Masks, axial and coronal** (today's images), when a learned model supplied lobe or lesion
   masks, so that a site with weights loses nothing: the level of greatest lesion burden when a
   lesion mask has voxels, else the largest lung area (:func:`select_levels`); lobes when present
   (else the left and right lungs, else the lung mask), then ground-glass opacity and
   consolidation in their own colours when those masks exist, else the all-lesions mask.  Region
   colours are fixed (:data:`LEGEND_COLOURS`) and shared with the SEG's Recommended Display
   CIELab Value (PS3.3 C.8.20.2).

Without densitometry the key images are the two mask images alone, exactly as before.

Display
-------
All images are in a lung window (width 1500 HU, level -600 HU) in radiological convention
(patient's right on the viewer's left, anterior up on the axial image, superior up on the
coronal one, from the direction cosines), resampled to square display pixels from the voxel
spacing so that anatomy keeps its true proportions, with R and L markers.

Legends are not drawn into the pictures: each :class:`KeyImage` carries the legend of exactly
the colours it shows (``legend``), for the PDF to set in type beside it.  A legend painted into a
picture printed 90 mm wide would be too small to read and would cover lung.  The zone image also
writes each zone's short name (RU ... LL) into the zone, which stays readable at that size and
lets a reader who cannot tell the colours apart still identify each zone.

Colours
-------
Band and zone colours are from the Okabe-Ito palette (Okabe and Ito, "Color Universal Design",
2008), designed to stay distinguishable with the common colour-vision deficiencies and
reproducible in CMYK print (none is a saturated screen primary).  The palette has seven colours
for nine uses, so the zone image reuses two band colours; each image's legend is its own.
Vermillion is kept for non-aerated lung alone, as the most severe band.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from models.findings import (
    DENSITY_BAND_LABELS,
    DENSITY_BAND_RANGES_HU,
    LOBE_NAMES,
    LUNG_REGIONS,
    REGION_LABELS,
    REGION_NAMES,
    ZONE_NAMES,
    Densitometry,
    Findings,
)

__all__ = [
    "BAND_ALPHA",
    "BAND_COLOURS",
    "INVOLVED_BANDS",
    "LEGEND_COLOURS",
    "LEGEND_LABELS",
    "LESION_KEY",
    "LESION_TYPES",
    "RIND_LINE_COLOUR",
    "WINDOW_LEVEL_HU",
    "WINDOW_WIDTH_HU",
    "ZONE_COLOURS",
    "KeyImage",
    "legend_key",
    "lesion_mask",
    "overlay_regions",
    "png_bytes",
    "render_key_images",
    "SALIENT_PCT",
    "band_mask",
    "select_density_slice",
    "select_levels",
]

Colour = tuple[int, int, int]
LegendEntry = tuple[str, Colour]

WINDOW_WIDTH_HU = 1500.0
WINDOW_LEVEL_HU = -600.0
#: Legend key of the all-lesions mask, and of any other mask that is not a region.
LESION_KEY = "lesion"
#: Lesion masks drawn in their own colours instead of the all-lesions mask when present.
LESION_TYPES: tuple[str, ...] = ("ggo", "consolidation")
#: Fixed RGB colour per region (and for lesions).
LEGEND_COLOURS: Mapping[str, Colour] = MappingProxyType(
    {
        "lungs": (0, 190, 255),
        "lung_right": (52, 120, 246),
        "lung_left": (46, 204, 113),
        "RUL": (52, 152, 219),
        "RML": (26, 188, 156),
        "RLL": (155, 89, 182),
        "LUL": (241, 196, 15),
        "LLL": (230, 126, 34),
        LESION_KEY: (231, 29, 54),
        "ggo": (255, 0, 255),
        "consolidation": (190, 0, 0),
    }
)
LEGEND_LABELS: Mapping[str, str] = MappingProxyType(
    {
        **REGION_LABELS,
        LESION_KEY: "Lesion",
        "ggo": "Ground-glass opacity",
        "consolidation": "Consolidation",
    }
)
#: Fill colour of the density bands that mark disease (Okabe-Ito sky blue, yellow, vermillion):
#: cool for too much air, warm and darker for less air.  Well-aerated lung and the band above
#: +100 HU are not coloured (module docstring).
BAND_COLOURS: Mapping[str, Colour] = MappingProxyType(
    {
        "emphysema": (86, 180, 233),
        "poorly_aerated": (240, 228, 66),
        "non_aerated": (213, 94, 0),
    }
)
#: Opacity of a band fill: strong enough to tint emphysema, which is nearly black in the lung
#: window, while the grey-scale texture below stays visible.
BAND_ALPHA = 0.5
#: Fill and outline colour of each zone (Okabe-Ito), chosen so that zones stacked above one
#: another within a lung differ in both hue and lightness.
ZONE_COLOURS: Mapping[str, Colour] = MappingProxyType(
    {
        "RU": (86, 180, 233),
        "RM": (230, 159, 0),
        "RL": (0, 158, 115),
        "LU": (0, 114, 178),
        "LM": (240, 228, 66),
        "LL": (204, 121, 167),
    }
)
#: Colour of the dotted core/rind boundary: white contrasts with every zone fill.
RIND_LINE_COLOUR: Colour = (255, 255, 255)
_ALPHA = 0.35
_MAX_SIDE = 512
#: Bands whose voxels make a zone involved (the zone score's definition).
INVOLVED_BANDS: tuple[str, ...] = ("poorly_aerated", "non_aerated")

Plane = Literal["axial", "coronal"]


@dataclass(frozen=True)
class KeyImage:
    """One rendered key image.

    Attributes
    ----------
    plane : {"axial", "coronal"}
        Orientation of the image.
    index : int
        Slice index ``k`` (axial) or row index ``y`` (coronal) of the volume.
    caption : str
        Human caption, with the reason the level was chosen.
    image : PIL.Image.Image
        RGB image with overlays and R/L markers.
    legend : tuple of (str, (int, int, int))
        Label in words and RGB of every colour this image shows, in drawing order.
    """

    plane: Plane
    index: int
    caption: str
    image: Image.Image
    legend: tuple[LegendEntry, ...]


@dataclass(frozen=True)
class _Plan:
    """A key image before rendering: everything but the pixels, which ``draw`` makes on demand."""

    plane: Plane
    index: int
    caption: str
    legend: tuple[LegendEntry, ...]
    draw: Callable[[], Image.Image]


def _union(masks: list[np.ndarray]) -> np.ndarray:
    union = np.zeros(masks[0].shape, dtype=bool)
    for mask in masks:
        union |= mask
    return union


def legend_key(name: str) -> str:
    """Key of :data:`LEGEND_COLOURS` for mask ``name`` (regions and lesion types by name)."""
    return name if name in REGION_NAMES or name in LESION_TYPES else LESION_KEY


def _lesion_layers(findings: Findings) -> list[tuple[str, np.ndarray]]:
    """Lesion masks to draw, as (legend key, mask): the lesion types when any has voxels, else
    the union of all lesion masks."""
    typed = [(name, findings.masks[name]) for name in LESION_TYPES if name in findings.masks]
    if any(mask.any() for _, mask in typed):
        return [(name, mask) for name, mask in typed if mask.any()]
    union = lesion_mask(findings)
    return [(LESION_KEY, union)] if union is not None and union.any() else []


def lesion_mask(findings: Findings) -> np.ndarray | None:
    """Union of all masks that are not regions of ``REGION_NAMES``, or None without any."""
    names = [name for name in findings.masks if name not in REGION_NAMES]
    if not names:
        return None
    return _union([findings.masks[name] for name in names])


def _lung_mask(findings: Findings) -> np.ndarray | None:
    for group in (("lungs",), ("lung_left", "lung_right"), LOBE_NAMES):
        present = [findings.masks[name] for name in group if name in findings.masks]
        if present:
            return _union(present)
    return None


def select_levels(findings: Findings) -> tuple[int, int, str]:
    """Axial slice index, coronal row index and the reason they were chosen, for the mask images.

    Returns
    -------
    tuple of (int, int, str)
        Greatest lesion burden when a lesion mask has voxels, else largest lung area, else the
        middle of the volume.
    """
    nz, ny, _ = findings.volume.geometry.shape
    lesions = lesion_mask(findings)
    if lesions is not None and lesions.any():
        return int(lesions.sum(axis=(1, 2)).argmax()), int(lesions.sum(axis=(0, 2)).argmax()), "greatest lesion burden"
    lungs = _lung_mask(findings)
    if lungs is not None and lungs.any():
        return int(lungs.sum(axis=(1, 2)).argmax()), int(lungs.sum(axis=(0, 2)).argmax()), "largest lung area"
    return nz // 2, ny // 2, "middle of the volume (no lung mask)"


def band_mask(hu: np.ndarray, band: str) -> np.ndarray:
    """Voxels of ``hu`` in density ``band`` (``[low, high)``, so a voxel on an edge is in the band above)."""
    low, high = DENSITY_BAND_RANGES_HU[band]
    inside = np.ones(hu.shape, dtype=bool)
    if low is not None:
        inside &= hu >= low
    if high is not None:
        inside &= hu < high
    return inside


def _zone_slice(findings: Findings, densitometry: Densitometry, zone: str, bands: tuple[str, ...]) -> int:
    """Axial slice with the most voxels of ``zone`` in any of ``bands`` (the first such slice on a tie)."""
    in_zone = densitometry.zone_map.labels == ZONE_NAMES.index(zone) + 1
    occupied = np.flatnonzero(in_zone.any(axis=(1, 2)))
    low, high = int(occupied[0]), int(occupied[-1]) + 1
    hu = findings.volume.hu[low:high]
    hits = in_zone[low:high] & _union([band_mask(hu, band) for band in bands])
    return low + int(np.count_nonzero(hits, axis=(1, 2)).argmax())


def _percent(value: float) -> str:
    """A share for a caption; never "0.0 %" for a share that is not zero."""
    return "< 0.1 %" if value < 0.05 else f"{value:.1f} %"


#: A zone share (%) that counts as a finding worth the key image: the 5 % at which a zone's
#: weight-free score reaches 2 (Pan et al. thresholds), used alike for LAA-950.
SALIENT_PCT = 5.0


def select_density_slice(findings: Findings, densitometry: Densitometry) -> tuple[int, str]:
    """Axial slice of the density key image and the rule that chose it, in words.

    The most involved zone (highest ``involvement_pct``, ties broken in :data:`ZONE_NAMES`
    order) at its slice with the most poorly or non-aerated voxels, unless its involvement is
    below :data:`SALIENT_PCT` while the most emphysematous zone (highest LAA-950, same tie rule)
    reaches it: then that zone, at its slice with the most emphysema-like voxels (vessels and
    partial volume give every real zone some involvement, so "no involvement at all" would never
    show an emphysematous lung); else the slice with the largest lung area, else the middle of
    the volume.  The zone's own slice, not the slice of most involvement in
    both lungs, so that the picture shows the zone the caption names.

    Returns
    -------
    tuple of (int, str)
        Slice index ``k`` and the rule, naming the zone in words with its involvement or LAA-950.
    """
    involvement = {
        zone: score.involvement_pct
        for zone in ZONE_NAMES
        if (score := densitometry.zone_scores.get(zone)) is not None and score.involvement_pct
    }
    emphysema = {
        zone: region.laa950_pct
        for zone in ZONE_NAMES
        if (region := densitometry.regions.get(zone)) is not None and region.laa950_pct
    }
    involved = max(involvement, key=involvement.__getitem__) if involvement else None
    emphysematous = max(emphysema, key=emphysema.__getitem__) if emphysema else None
    if involved is not None and (
        involvement[involved] >= SALIENT_PCT or emphysematous is None or emphysema[emphysematous] < SALIENT_PCT
    ):
        k = _zone_slice(findings, densitometry, involved, INVOLVED_BANDS)
        return k, (
            f"{REGION_LABELS[involved]}, the most involved zone ({_percent(involvement[involved])} poorly or "
            "non-aerated), at its slice with the most poorly or non-aerated lung"
        )
    if emphysematous is not None:
        k = _zone_slice(findings, densitometry, emphysematous, ("emphysema",))
        why = (
            "no zone has poorly or non-aerated lung"
            if involved is None
            else (f"no zone is {SALIENT_PCT:g} % or more poorly or non-aerated")
        )
        return k, (
            f"{REGION_LABELS[emphysematous]}, the most emphysematous zone (LAA-950 "
            f"{_percent(emphysema[emphysematous])}), as {why}; at its slice with the most emphysema-like lung"
        )
    areas = np.count_nonzero(densitometry.zone_map.labels, axis=(1, 2))
    if areas.any():
        return int(areas.argmax()), "largest lung area; no zone has poorly aerated, non-aerated or emphysema-like lung"
    return findings.volume.geometry.shape[0] // 2, "middle of the volume (no lung in the zone map)"


def _drawn_regions(findings: Findings) -> list[str]:
    """Region masks to draw: lobes if any, else left/right lungs, else the lung mask."""
    for group in (LOBE_NAMES, ("lung_right", "lung_left"), ("lungs",)):
        present = [name for name in group if name in findings.masks and findings.masks[name].any()]
        if present:
            return present
    return []


def _mask_layers(findings: Findings) -> list[tuple[str, np.ndarray]]:
    """(legend key, mask) of every layer of the mask images, in drawing order."""
    regions = [(name, findings.masks[name]) for name in _drawn_regions(findings)]
    return regions + _lesion_layers(findings)


def _shows_masks(findings: Findings) -> bool:
    """Whether the mask images are shown: always without densitometry (they are then the only
    key images), else only when a learned model added lobes or lesions to the lung masks."""
    return findings.densitometry is None or any(name not in LUNG_REGIONS for name in findings.masks)


def _window(hu: np.ndarray) -> np.ndarray:
    low = WINDOW_LEVEL_HU - WINDOW_WIDTH_HU / 2
    grey = np.clip((hu.astype(np.float32) - low) / WINDOW_WIDTH_HU, 0.0, 1.0) * 255.0
    rgb: np.ndarray = np.repeat(grey[..., None], 3, axis=-1)
    return rgb


def _border(inside: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """Pixels of ``inside`` with a 4-neighbour in ``outside`` (nothing beyond the array counts)."""
    near = np.zeros_like(outside)
    near[1:, :] |= outside[:-1, :]
    near[:-1, :] |= outside[1:, :]
    near[:, 1:] |= outside[:, :-1]
    near[:, :-1] |= outside[:, 1:]
    border: np.ndarray = inside & near
    return border


def _edges(mask: np.ndarray) -> np.ndarray:
    return _border(mask, ~mask)


def _blend(rgb: np.ndarray, mask: np.ndarray, colour: Colour, alpha: float) -> None:
    """Tint the pixels of ``mask`` in float ``rgb`` towards ``colour`` with opacity ``alpha``, in place."""
    rgb[mask] = (1.0 - alpha) * rgb[mask] + alpha * np.asarray(colour, dtype=np.float32)


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.clip(rgb, 0, 255).astype(np.uint8)
    return out


def overlay_regions(hu_plane: np.ndarray, masks: list[tuple[np.ndarray, Colour]]) -> np.ndarray:
    """Windowed RGB image of a plane with translucent fills and opaque outlines of ``masks``."""
    rgb = _window(hu_plane)
    for mask, colour in masks:
        if not mask.any():
            continue
        _blend(rgb, mask, colour, _ALPHA)
        rgb[_edges(mask)] = np.asarray(colour, dtype=np.float32)
    return _to_uint8(rgb)


def _cut(array: np.ndarray, plane: Plane, index: int) -> np.ndarray:
    cut: np.ndarray = array[index] if plane == "axial" else array[:, index, :]
    return cut


def _orient(pixels: np.ndarray, findings: Findings, plane: Plane) -> np.ndarray:
    """Flip a plane (RGB or labels) to radiological convention from the direction cosines (LPS axes)."""
    direction = np.asarray(findings.volume.geometry.direction, dtype=float)
    if direction[0, 0] < 0:
        pixels = pixels[:, ::-1]
    if plane == "axial" and direction[1, 1] < 0:
        pixels = pixels[::-1]
    if plane == "coronal" and direction[2, 2] > 0:
        pixels = pixels[::-1]
    return np.ascontiguousarray(pixels)


def _display(findings: Findings, plane: Plane, rgb: np.ndarray) -> Image.Image:
    """An RGB plane oriented and resampled (bilinear) to square pixels of true proportions."""
    rgb = _orient(rgb, findings, plane)
    sz, sy, sx = findings.volume.geometry.spacing
    height_mm = rgb.shape[0] * (sy if plane == "axial" else sz)
    width_mm = rgb.shape[1] * sx
    pixel_mm = max(min(sx, sy, sz), max(height_mm, width_mm) / _MAX_SIDE)
    size = (max(1, round(width_mm / pixel_mm)), max(1, round(height_mm / pixel_mm)))
    return Image.fromarray(rgb, mode="RGB").resize(size, Image.Resampling.BILINEAR)


def _display_labels(findings: Findings, plane: Plane, labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A uint8 label plane oriented and resampled (nearest) onto a displayed image of ``size``."""
    image = Image.fromarray(_orient(labels.astype(np.uint8), findings, plane)).resize(size, Image.Resampling.NEAREST)
    return np.asarray(image)


def _font_px(image: Image.Image) -> int:
    """Height of the marker and zone-name text: about a 24th of the image, at least 8 pixels."""
    return max(8, image.size[1] // 24)


def _font(image: Image.Image) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=_font_px(image))


def _mark_sides(image: Image.Image) -> None:
    """Draw the R and L markers at the viewer's left and right edges."""
    width, height = image.size
    font = _font(image)
    draw = ImageDraw.Draw(image)
    draw.text((3, height // 2), "R", fill=(255, 255, 0), font=font, anchor="lm")
    draw.text((width - 3, height // 2), "L", fill=(255, 255, 0), font=font, anchor="rm")


def _name_zones(image: Image.Image, zones: np.ndarray) -> None:
    """Write each zone's short name at its deepest displayed point, where the zone is wide enough
    to hold it (white on a black rim, readable over any fill)."""
    font = _font(image)
    draw = ImageDraw.Draw(image)
    for number, zone in enumerate(ZONE_NAMES, start=1):
        depth = ndimage.distance_transform_edt(zones == number)
        if depth.max() < _font_px(image) / 2:
            continue
        row, column = np.unravel_index(int(depth.argmax()), depth.shape)
        draw.text(
            (int(column), int(row)), zone, fill=(255, 255, 255), font=font, anchor="mm", stroke_width=1, stroke_fill=0
        )


def _render(findings: Findings, plane: Plane, index: int) -> Image.Image:
    """A mask image: region and lesion layers over the windowed plane."""
    layers = [(_cut(mask, plane, index), LEGEND_COLOURS[key]) for key, mask in _mask_layers(findings)]
    image = _display(findings, plane, overlay_regions(_cut(findings.volume.hu, plane, index), layers))
    _mark_sides(image)
    return image


def _band_layers(findings: Findings, densitometry: Densitometry, k: int) -> list[tuple[str, np.ndarray]]:
    """(band, mask) of each coloured band with lung voxels on axial slice ``k``, in HU order."""
    hu = findings.volume.hu[k]
    lung = densitometry.zone_map.labels[k] > 0
    layers = [(band, lung & band_mask(hu, band)) for band in BAND_COLOURS]
    return [(band, mask) for band, mask in layers if mask.any()]


def _render_density(findings: Findings, densitometry: Densitometry, k: int) -> Image.Image:
    """The density key image: coloured bands inside the lungs on axial slice ``k``.

    No zone names are written on it: at the deepest point of a zone they would cover the very
    lesion the image is chosen to show; the caption names the zone.
    """
    rgb = _window(findings.volume.hu[k])
    for band, mask in _band_layers(findings, densitometry, k):
        _blend(rgb, mask, BAND_COLOURS[band], BAND_ALPHA)
    image = _display(findings, "axial", _to_uint8(rgb))
    _mark_sides(image)
    return image


def _dotted(shape: tuple[int, ...]) -> np.ndarray:
    """Two pixels of every five along any row, column or diagonal: a lattice that breaks a line
    of any direction into dots."""
    rows, columns = np.indices(shape[:2])
    dots: np.ndarray = (rows + 2 * columns) % 5 < 2
    return dots


def _core_plane(densitometry: Densitometry, y: int) -> np.ndarray:
    core: np.ndarray = (densitometry.zone_map.labels[:, y, :] > 0) & ~densitometry.zone_map.rind[:, y, :]
    return core


def _render_zones(findings: Findings, densitometry: Densitometry, y: int) -> Image.Image:
    """The zone key image: six zones filled and outlined, and the dotted core/rind boundary, on coronal row ``y``."""
    labels = densitometry.zone_map.labels[:, y, :]
    rgb = _window(findings.volume.hu[:, y, :])
    for number, zone in enumerate(ZONE_NAMES, start=1):
        _blend(rgb, labels == number, ZONE_COLOURS[zone], _ALPHA)
    image = _display(findings, "coronal", _to_uint8(rgb))
    zones = _display_labels(findings, "coronal", labels, image.size)
    core = _display_labels(findings, "coronal", _core_plane(densitometry, y), image.size).astype(bool)
    pixels = np.array(image)
    for number, zone in enumerate(ZONE_NAMES, start=1):
        pixels[_edges(zones == number)] = ZONE_COLOURS[zone]
    pixels[_border(core, (zones > 0) & ~core) & _dotted(pixels.shape)] = RIND_LINE_COLOUR
    image = Image.fromarray(pixels)
    _name_zones(image, zones)
    _mark_sides(image)
    return image


def _density_plan(findings: Findings, densitometry: Densitometry) -> _Plan:
    k, rule = select_density_slice(findings, densitometry)
    nz = findings.volume.geometry.shape[0]
    caption = (
        f"Axial slice {k + 1} of {nz}: {rule}. Colour: density band inside the lungs "
        "(well-aerated lung and values of +100 HU and above are not coloured)"
    )
    legend = tuple(
        (DENSITY_BAND_LABELS[band], BAND_COLOURS[band]) for band, _ in _band_layers(findings, densitometry, k)
    )
    return _Plan("axial", k, caption, legend, lambda: _render_density(findings, densitometry, k))


def _zone_plan(findings: Findings, densitometry: Densitometry) -> _Plan:
    labels = densitometry.zone_map.labels
    areas = np.count_nonzero(labels, axis=(0, 2))
    y, reason = (
        (int(areas.argmax()), "largest lung area") if areas.any() else (labels.shape[1] // 2, "middle of the volume")
    )
    rind_mm = densitometry.zone_map.rind_mm
    caption = (
        f"Coronal reformat through row {y + 1} ({reason}): zones, the upper, middle and lower third of each "
        f"lung's height; dotted line: core/rind boundary, {rind_mm:g} mm inside the lung surface"
    )
    plane = labels[:, y, :]
    legend = [
        (f"{REGION_LABELS[zone]} ({zone})", ZONE_COLOURS[zone])
        for number, zone in enumerate(ZONE_NAMES, start=1)
        if (plane == number).any()
    ]
    core = _core_plane(densitometry, y)
    if _border(core, (plane > 0) & ~core).any():
        legend.append((f"Core/rind boundary (dotted), {rind_mm:g} mm inside the lung surface", RIND_LINE_COLOUR))
    return _Plan("coronal", y, caption, tuple(legend), lambda: _render_zones(findings, densitometry, y))


def _weight_free_plans(findings: Findings) -> list[_Plan]:
    densitometry = findings.densitometry
    if densitometry is None:
        return []
    return [_density_plan(findings, densitometry), _zone_plan(findings, densitometry)]


def _mask_plans(findings: Findings) -> list[_Plan]:
    k, y, reason = select_levels(findings)
    nz = findings.volume.geometry.shape[0]
    layers = _mask_layers(findings)

    def legend(plane: Plane, index: int) -> tuple[LegendEntry, ...]:
        return tuple(
            (LEGEND_LABELS[key], LEGEND_COLOURS[key]) for key, mask in layers if _cut(mask, plane, index).any()
        )

    return [
        _Plan(
            "axial",
            k,
            f"Axial slice {k + 1} of {nz} ({reason})",
            legend("axial", k),
            lambda: _render(findings, "axial", k),
        ),
        _Plan(
            "coronal",
            y,
            f"Coronal reformat through row {y + 1} ({reason})",
            legend("coronal", y),
            lambda: _render(findings, "coronal", y),
        ),
    ]


def render_key_images(findings: Findings) -> list[KeyImage]:
    """Render the key images of ``findings`` in display order (see module docstring).

    Returns
    -------
    list of KeyImage
        With densitometry: the density-band axial image, the zone coronal image, then the two
        mask images when a learned model supplied lobes or lesions.  Without: the two mask images.
    """
    plans = _weight_free_plans(findings) + (_mask_plans(findings) if _shows_masks(findings) else [])
    return [KeyImage(plan.plane, plan.index, plan.caption, plan.draw(), plan.legend) for plan in plans]


def png_bytes(image: Image.Image) -> bytes:
    """PNG encoding of a key image.

    zlib level 3 without PIL's ``optimize`` pass: on the shared 64-slice series the two key images
    took 0.04 s of CPU instead of 0.43 s, for 437 kB instead of 426 kB (issue 19: reports are the
    slow part of the weight-free path).
    """
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()
