"""Key images for the PDF: an axial slice and a coronal reformat with coloured mask overlays.

Both are shown in a lung window (width 1500 HU, level -600 HU) in radiological convention
(patient's right on the viewer's left, anterior up on the axial image, superior up on the
coronal one), resampled to square display pixels from the voxel spacing so that anatomy keeps
its true proportions.  The level is the slice (and coronal row) of greatest lesion burden when
a lesion mask has voxels, else the one with the largest lung area.  Region colours are fixed
(:data:`LEGEND_COLOURS`) and shared with the SEG's Recommended Display CIELab Value
(PS3.3 C.8.20.2).  Lobes are drawn when present (else the left and right lungs, else the lung
mask), then ground-glass opacity and consolidation in their own colours when those masks exist,
else the all-lesions mask.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from models.findings import LOBE_NAMES, REGION_LABELS, REGION_NAMES, Findings

__all__ = [
    "LEGEND_COLOURS",
    "LEGEND_LABELS",
    "LESION_KEY",
    "LESION_TYPES",
    "WINDOW_LEVEL_HU",
    "WINDOW_WIDTH_HU",
    "KeyImage",
    "legend_entries",
    "legend_key",
    "lesion_mask",
    "overlay_regions",
    "png_bytes",
    "render_key_images",
    "select_levels",
]

WINDOW_WIDTH_HU = 1500.0
WINDOW_LEVEL_HU = -600.0
#: Legend key of the all-lesions mask, and of any other mask that is not a region.
LESION_KEY = "lesion"
#: Lesion masks drawn in their own colours instead of the all-lesions mask when present.
LESION_TYPES: tuple[str, ...] = ("ggo", "consolidation")
#: Fixed RGB colour per region (and for lesions).
LEGEND_COLOURS: Mapping[str, tuple[int, int, int]] = MappingProxyType(
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
_ALPHA = 0.35
_MAX_SIDE = 512

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
    """

    plane: Plane
    index: int
    caption: str
    image: Image.Image


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
    """Axial slice index, coronal row index and the reason they were chosen.

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


def _drawn_regions(findings: Findings) -> list[str]:
    """Region masks to draw: lobes if any, else left/right lungs, else the lung mask."""
    for group in (LOBE_NAMES, ("lung_right", "lung_left"), ("lungs",)):
        present = [name for name in group if name in findings.masks and findings.masks[name].any()]
        if present:
            return present
    return []


def legend_entries(findings: Findings) -> list[tuple[str, tuple[int, int, int]]]:
    """(label, RGB) of every colour the key images of ``findings`` use, in drawing order."""
    keys = _drawn_regions(findings) + [key for key, _ in _lesion_layers(findings)]
    return [(LEGEND_LABELS[key], LEGEND_COLOURS[key]) for key in keys]


def _window(hu: np.ndarray) -> np.ndarray:
    low = WINDOW_LEVEL_HU - WINDOW_WIDTH_HU / 2
    grey = np.clip((hu.astype(np.float32) - low) / WINDOW_WIDTH_HU, 0.0, 1.0) * 255.0
    rgb: np.ndarray = np.repeat(grey[..., None], 3, axis=-1)
    return rgb


def _edges(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    edges: np.ndarray = mask & ~inner
    return edges


def overlay_regions(hu_plane: np.ndarray, masks: list[tuple[np.ndarray, tuple[int, int, int]]]) -> np.ndarray:
    """Windowed RGB image of a plane with translucent fills and opaque outlines of ``masks``."""
    rgb = _window(hu_plane)
    for mask, colour in masks:
        if not mask.any():
            continue
        colour_arr = np.asarray(colour, dtype=np.float32)
        rgb[mask] = (1.0 - _ALPHA) * rgb[mask] + _ALPHA * colour_arr
        rgb[_edges(mask)] = colour_arr
    out: np.ndarray = np.clip(rgb, 0, 255).astype(np.uint8)
    return out


def _plane(
    findings: Findings, plane: Plane, index: int
) -> tuple[np.ndarray, list[tuple[np.ndarray, tuple[int, int, int]]]]:
    def cut(array: np.ndarray) -> np.ndarray:
        return array[index] if plane == "axial" else array[:, index, :]

    masks = [(cut(findings.masks[name]), LEGEND_COLOURS[name]) for name in _drawn_regions(findings)]
    masks += [(cut(mask), LEGEND_COLOURS[key]) for key, mask in _lesion_layers(findings)]
    return cut(findings.volume.hu), masks


def _orient(rgb: np.ndarray, findings: Findings, plane: Plane) -> np.ndarray:
    """Flip to radiological convention from the direction cosines (LPS patient axes)."""
    direction = np.asarray(findings.volume.geometry.direction, dtype=float)
    if direction[0, 0] < 0:
        rgb = rgb[:, ::-1]
    if plane == "axial" and direction[1, 1] < 0:
        rgb = rgb[::-1]
    if plane == "coronal" and direction[2, 2] > 0:
        rgb = rgb[::-1]
    return np.ascontiguousarray(rgb)


def _render(findings: Findings, plane: Plane, index: int) -> Image.Image:
    hu_plane, masks = _plane(findings, plane, index)
    rgb = _orient(overlay_regions(hu_plane, masks), findings, plane)
    sz, sy, sx = findings.volume.geometry.spacing
    height_mm = rgb.shape[0] * (sy if plane == "axial" else sz)
    width_mm = rgb.shape[1] * sx
    pixel_mm = max(min(sx, sy, sz), max(height_mm, width_mm) / _MAX_SIDE)
    size = (max(1, round(width_mm / pixel_mm)), max(1, round(height_mm / pixel_mm)))
    image = Image.fromarray(rgb, mode="RGB").resize(size, Image.Resampling.BILINEAR)
    font = ImageFont.load_default(size=max(8, size[1] // 24))
    draw = ImageDraw.Draw(image)
    draw.text((3, size[1] // 2), "R", fill=(255, 255, 0), font=font, anchor="lm")
    draw.text((size[0] - 3, size[1] // 2), "L", fill=(255, 255, 0), font=font, anchor="rm")
    return image


def render_key_images(findings: Findings) -> list[KeyImage]:
    """Render the axial and coronal key images of ``findings`` (see module docstring)."""
    k, y, reason = select_levels(findings)
    nz = findings.volume.geometry.shape[0]
    return [
        KeyImage("axial", k, f"Axial slice {k + 1} of {nz} ({reason})", _render(findings, "axial", k)),
        KeyImage("coronal", y, f"Coronal reformat through row {y + 1} ({reason})", _render(findings, "coronal", y)),
    ]


def png_bytes(image: Image.Image) -> bytes:
    """PNG encoding of a key image."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
