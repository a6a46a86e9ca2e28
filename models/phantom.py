"""A synthetic chest CT with known lungs, lobes and lesions, for tests and for the demo.

The phantom is built from simple solids placed in patient coordinates (DICOM LPS, mm): an
elliptic body with fat, muscle, sternum, spine and ribs (3-9 mm outside the lungs, since the
costal pleura lies just inside the ribs); two lungs (~ -850 HU) with domed bases and vessels;
heart and aorta pressing on the lungs; a trachea splitting at the carina into two main bronchi
that enter the lungs; a stomach gas bubble under the left dome (gas that must not be
called lung); a patient table; optionally a dense consolidation against the pleura and lungs that
touch in the midline.  Because every solid is known, so are the true left and right lung masks,
which is what makes Dice-type tests of :mod:`models.qct.lungmask` possible.

Lobes: each lung is cut by an oblique (major) fissure, a plane rising from the front of the
diaphragm to the back of the upper chest, into an upper lobe in front and above and a lower lobe
behind and below; the right upper part is cut again by a horizontal (minor) fissure into the
upper and the middle lobe.  The fissures are drawn as thin, slightly denser surfaces with the
partial-volume contrast a 0.4 mm sheet of tissue has in a voxel of the grid, so they are faint on
thick slices, as on a scanner.  The lobes partition each lung exactly.

Lesions (:class:`LesionSpec`): ground-glass opacities (-600 HU) and consolidations (+30 HU),
each grown inside one lobe from a point on the lobe's surface until it covers a requested
fraction of the lobe, so that per-lobe involvement and the CT severity score are known exactly
(within one voxel).  A lesion grown towards the back of a lower lobe lies against the costal
pleura, where a lung mask must keep it.

Acquisition: ``kernel`` blurs (soft) or edge-enhances (sharp) each slice in-plane before white
noise is added; ``contrast`` makes blood +250 HU as after intravenous contrast.

Sizes are adult-like and fixed in mm, independent of the voxel grid, so a phantom sampled at 1 mm
or at 8 mm has the same anatomy; an in-plane field of view of at least 340 mm holds the body.

:func:`write_ct_series` writes any HU volume as a CT Image Storage series (PS3.3 A.3) that
``dciodvfy`` accepts, so the phantom can travel the same DICOM path as a real scan.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from scipy import ndimage

from models.findings import LOBE_NAMES, Geometry, Volume

__all__ = [
    "D1_CLUSTERS",
    "DENSITOMETRY_MATERIALS",
    "KERNELS",
    "PATIENT_POSITIONS",
    "DensitometryPhantom",
    "LesionSpec",
    "Phantom",
    "chest_phantom",
    "densitometry_phantom",
    "write_ct_series",
]

logger = logging.getLogger(__name__)

#: Image Orientation (Patient) row and column cosines of axial scans per Patient Position
#: (PS3.3 C.7.3.1.1.2), as scanners write them: the table is always at the bottom of the image.
PATIENT_POSITIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "HFS": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "HFP": ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
    "FFS": ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "FFP": ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
}
#: Reconstruction kernels the phantom imitates: none (ideal edges), soft (blurred), sharp (edge overshoot).
KERNELS: tuple[str, ...] = ("none", "soft", "sharp")

_AIR_HU = -1000.0
_LUNG_HU = -850.0
_FAT_HU = -100.0
_SOFT_TISSUE_HU = 35.0
_MUSCLE_HU = 50.0
_BLOOD_HU = 40.0
_CONTRAST_BLOOD_HU = 250.0
_LIVER_HU = 55.0
_BONE_HU = 600.0
_SPINE_HU = 350.0
_CONSOLIDATION_HU = 30.0
_GGO_HU = -600.0
_AIRWAY_WALL_HU = 60.0
_TABLE_HU = 150.0
#: A fissure is two layers of visceral pleura, a few tenths of a millimetre of soft tissue.
_FISSURE_MM = 0.4
_FISSURE_TISSUE_HU = 50.0
#: Gaussian width (mm) of a soft kernel's blur, and of the blur a sharp kernel subtracts (unsharp mask).
_KERNEL_SIGMA_MM = {"soft": 0.8, "sharp": 1.0}

#: Oblique fissure of each lung as the plane z = z0 + slope * y (mm; y grows to the back): it reaches
#: the diaphragm in front and the upper back (about T4) behind.
_OBLIQUE_FISSURE = {"right": (0.0, 0.9), "left": (5.0, 0.95)}
#: Horizontal fissure of the right lung: the plane z = 15 mm, in front of the oblique fissure.  With
#: these planes the lobes hold about LUL 53 %, LLL 47 % of the left lung and RUL 39 %, RML 15 %,
#: RLL 46 % of the right, close to the adult proportions.
_HORIZONTAL_FISSURE_Z = 15.0

#: Body cross-section semi-axes (mm): left-right, anterior-posterior.
_BODY_SEMI_AXES = (150.0, 105.0)


@dataclass(frozen=True)
class LesionSpec:
    """A lesion to grow in one lobe of the phantom.

    Attributes
    ----------
    lobe : str
        One of :data:`models.findings.LOBE_NAMES`.
    kind : {"ggo", "consolidation"}
        Ground-glass opacity (-600 HU, still below the -400 HU air threshold of a lung mask) or
        consolidation (+30 HU, as dense as soft tissue).
    fraction : float
        Share of the lobe's volume the lesion covers, in (0, 1]; lesions of one lobe are grown
        one after the other into voxels not yet taken, so their fractions add up.
    towards : tuple of float
        Patient-space direction (LPS: +x left, +y back, +z head) from the lobe's centre to the
        point of its surface where the lesion starts; the default, straight back, puts it against
        the costal pleura, where infectious opacities usually begin.
    """

    lobe: str
    kind: Literal["ggo", "consolidation"]
    fraction: float
    towards: tuple[float, float, float] = (0.0, 1.0, 0.0)

    def __post_init__(self) -> None:
        if self.lobe not in LOBE_NAMES:
            raise ValueError(f"lobe must be one of {LOBE_NAMES}, got {self.lobe!r}")
        if self.kind not in ("ggo", "consolidation"):
            raise ValueError(f"kind must be 'ggo' or 'consolidation', got {self.kind!r}")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if not np.any(self.towards):
            raise ValueError("towards must be a non-zero direction")


def _as_volume(hu: np.ndarray, geometry: Geometry, kind: str) -> Volume:
    """``hu`` as a :class:`Volume` whose SOP Instance UIDs are derived from ``kind``, the geometry and
    the slice index: synthetic, but the same on every call."""
    uids = tuple(str(generate_uid(entropy_srcs=[kind, repr(geometry), str(k)])) for k in range(hu.shape[0]))
    return Volume(hu=hu, geometry=geometry, source_sop_instance_uids=uids)


@dataclass(frozen=True)
class Phantom:
    """A synthetic CT in HU with its ground truth, all ``[z, y, x]`` on ``geometry``.

    ``left`` and ``right`` are the patient's left and right lungs (vessels, fissures, lesions and
    bronchial walls inside them included; the airway lumen excluded).  ``lobes`` maps each name
    of :data:`models.findings.LOBE_NAMES` to its mask; the lobes partition the lungs.  ``airway``
    is the lumen of the trachea and main bronchi, ``gas`` the stomach bubble under the left
    dome, which is air but not lung.  ``consolidation`` holds every dense lesion (the patch of
    ``chest_phantom(consolidation=True)`` and consolidation lesions), ``ggo`` every ground-glass
    lesion; both are empty when none was asked for.
    """

    hu: np.ndarray
    left: np.ndarray
    right: np.ndarray
    airway: np.ndarray
    consolidation: np.ndarray
    gas: np.ndarray
    geometry: Geometry
    patient_position: str
    lobes: Mapping[str, np.ndarray]
    ggo: np.ndarray

    @property
    def lesions(self) -> np.ndarray:
        """All lesions, ground glass and consolidation (the ``lesions`` mask of LESION_NAMES)."""
        union: np.ndarray = self.ggo | self.consolidation
        return union

    def volume(self) -> Volume:
        """The phantom as a :class:`Volume`, with synthetic but stable SOP Instance UIDs."""
        return _as_volume(self.hu, self.geometry, "lungcds-phantom")


@dataclass(frozen=True)
class _Grid:
    """Patient coordinates (mm) of the generation grid: z superior, y posterior, x left.

    ``spacing`` is the voxel size (mm) along ``[z, y, x]``.
    """

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    spacing: tuple[float, float, float]

    def box(self, lo: tuple[float, float, float], hi: tuple[float, float, float]) -> tuple[slice, ...]:
        """Index slices ``[z, y, x]`` of the voxels whose centres lie in an (x, y, z) mm box."""
        out = []
        for axis, low, high in ((self.z, lo[2], hi[2]), (self.y, lo[1], hi[1]), (self.x, lo[0], hi[0])):
            start = int(np.searchsorted(axis, low, side="left"))
            stop = int(np.searchsorted(axis, high, side="right"))
            out.append(slice(start, max(start, stop)))
        return tuple(out)

    def coords(self, box: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable x, y, z coordinate arrays of a box, float32 to keep memory low."""
        zs, ys, xs = box
        return (
            self.x[xs].astype(np.float32)[None, None, :],
            self.y[ys].astype(np.float32)[None, :, None],
            self.z[zs].astype(np.float32)[:, None, None],
        )


def _ellipsoid(
    grid: _Grid, centre: tuple[float, float, float], semi: tuple[float, float, float]
) -> tuple[tuple[slice, ...], np.ndarray]:
    """A solid ellipsoid as (box, mask within the box)."""
    box = grid.box(
        (centre[0] - semi[0], centre[1] - semi[1], centre[2] - semi[2]),
        (centre[0] + semi[0], centre[1] + semi[1], centre[2] + semi[2]),
    )
    x, y, z = grid.coords(box)
    inside = ((x - centre[0]) / semi[0]) ** 2 + ((y - centre[1]) / semi[1]) ** 2 + (
        (z - centre[2]) / semi[2]
    ) ** 2 <= 1.0
    return box, inside


def _tube(
    grid: _Grid, start: tuple[float, float, float], end: tuple[float, float, float], radius: float
) -> tuple[tuple[slice, ...], np.ndarray]:
    """A capsule (all points within ``radius`` of the segment start-end) as (box, mask)."""
    a, b = np.asarray(start), np.asarray(end)
    box = grid.box(tuple(np.minimum(a, b) - radius), tuple(np.maximum(a, b) + radius))
    x, y, z = grid.coords(box)
    d = b - a
    t = ((x - a[0]) * d[0] + (y - a[1]) * d[1] + (z - a[2]) * d[2]) / float(d @ d)
    t = np.clip(t, 0.0, 1.0)
    dist2 = (x - a[0] - t * d[0]) ** 2 + (y - a[1] - t * d[1]) ** 2 + (z - a[2] - t * d[2]) ** 2
    return box, dist2 <= radius**2


def _paint(target: np.ndarray, shape: tuple[tuple[slice, ...], np.ndarray], value: float | bool) -> None:
    """Set ``target`` to ``value`` inside a (box, mask) solid."""
    box, mask = shape
    view = target[box]
    view[np.broadcast_to(mask, view.shape)] = value


def _dome_top(centre_x: float, lung_centre_z: float) -> tuple[float, float, float, float]:
    """Diaphragm dome under one lung: (x centre, z of the lung floor, dome height, width) in mm."""
    return centre_x, lung_centre_z - 110.0, 45.0, 45.0


def _below_dome(
    x: np.ndarray, y: np.ndarray, z: np.ndarray | float, dome: tuple[float, float, float, float]
) -> np.ndarray:
    """True under the dome surface z = floor + height * exp(-r^2 / width^2)."""
    cx, floor, height, width = dome
    surface = floor + height * np.exp(-(((x - cx) / width) ** 2 + (y / (width * 1.2)) ** 2))
    return z < surface


def _layout(touching: bool) -> dict[str, tuple[float, float, float]]:
    """Centres and semi-axes (mm) of the lungs; touching lungs meet in the midline."""
    if touching:
        return {
            "right_centre": (-58.0, 0.0, 0.0),
            "right_semi": (59.5, 72.0, 110.0),
            "left_centre": (58.0, 0.0, 0.0),
            "left_semi": (59.5, 70.0, 105.0),
        }
    return {
        "right_centre": (-65.0, 0.0, 0.0),
        "right_semi": (55.0, 72.0, 110.0),
        "left_centre": (65.0, 0.0, 0.0),
        "left_semi": (52.0, 70.0, 105.0),
    }


def _ribs(grid: _Grid, layout: Mapping[str, tuple[float, float, float]], z: float) -> np.ndarray:
    """The ribs cut by the axial plane at ``z``: arcs 3-9 mm outside each lung, except on its medial side.

    As in a patient, the costal pleura lies just inside the ribs, so the ribs follow the lung's
    outline: each arc runs at a distance of 3 to 9 mm (to first order) from the cross-section of
    the lung's ellipsoid, around all but the 70-degree sector facing the midline (mediastinum).
    Below the middle of the lungs the cage stays wide (it holds the liver and spleen).
    """
    ribs = np.zeros((grid.y.size, grid.x.size), dtype=bool)
    x, y = grid.x[None, :], grid.y[:, None]
    for name in ("right", "left"):
        (cx, cy, cz), (a, b, c) = layout[f"{name}_centre"], layout[f"{name}_semi"]
        height = (z - cz) / c
        if height >= 1.0:
            continue
        scale = float(np.sqrt(max(0.0, 1.0 - height**2)))
        if height < 0.0:
            scale = max(scale, 0.6)
        u, v = (x - cx) / (a * scale), (y - cy) / (b * scale)
        distance = (u**2 + v**2 - 1.0) / (2.0 * np.hypot(u / (a * scale), v / (b * scale)))
        medial = -np.sign(cx)
        facing_midline = medial * (x - cx) > np.cos(np.radians(35.0)) * np.hypot(x - cx, y - cy)
        ribs |= (distance >= 3.0) & (distance <= 9.0) & ~facing_midline
    return ribs


def _vessels(
    rng: np.random.Generator, side: float, lung_centre: tuple[float, float, float]
) -> Iterator[tuple[tuple[float, float, float], tuple[float, float, float], float]]:
    """Pulmonary vessels of one lung: one large hilar trunk and a spray of tapering branches."""
    hilum = (side * 35.0, -5.0, 15.0)
    yield (side * 5.0, -15.0, 25.0), hilum, 8.0
    for _ in range(14):
        direction = rng.normal(size=3)
        direction[0] = side * abs(direction[0])
        direction /= np.linalg.norm(direction)
        reach = rng.uniform(0.5, 0.8)
        tip = np.asarray(lung_centre) + direction * np.asarray((45.0, 60.0, 90.0)) * reach
        yield hilum, (float(tip[0]), float(tip[1]), float(tip[2])), float(rng.uniform(1.5, 4.0))


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """Index slices of the smallest box holding every True voxel of a non-empty mask."""
    box: tuple[slice, ...] = ndimage.find_objects(mask.astype(np.uint8))[0]
    return box


def _lobes_and_fissures(grid: _Grid, name: str, lung: np.ndarray, hu: np.ndarray) -> dict[str, np.ndarray]:
    """Split one lung into its lobes and draw its fissures into ``hu``; returns the lobe masks.

    A fissure voxel gets the contrast of a ``_FISSURE_MM`` sheet of tissue spread over the
    voxel's extent along the fissure's normal: clearly visible on thin sections, faint at 8 mm,
    and never missing from a slice, whatever the grid.
    """
    lobes = {lobe: np.zeros(lung.shape, dtype=bool) for lobe in (("LUL", "LLL") if name == "left" else LOBE_NAMES[2:])}
    if not lung.any():
        return lobes
    box = _bounding_box(lung)
    _, y, z = grid.coords(box)
    sz, sy, _ = grid.spacing
    z0, slope = _OBLIQUE_FISSURE[name]
    norm = float(np.hypot(1.0, slope))
    above = (z - z0 - slope * y) / norm
    inside = lung[box]
    upper = inside & (above > 0.0)
    contrast = _FISSURE_TISSUE_HU - _LUNG_HU
    extent = (slope * sy + sz) / norm
    added = np.zeros(inside.shape, dtype=np.float32)
    added[np.broadcast_to(np.abs(above) <= extent / 2.0, inside.shape)] = min(1.0, _FISSURE_MM / extent) * contrast
    if name == "left":
        lobes["LUL"][box] = upper
        lobes["LLL"][box] = inside & ~upper
    else:
        high = np.broadcast_to(z >= _HORIZONTAL_FISSURE_Z, inside.shape)
        lobes["RUL"][box] = upper & high
        lobes["RML"][box] = upper & ~high
        lobes["RLL"][box] = inside & ~upper
        horizontal = np.broadcast_to(np.abs(z - _HORIZONTAL_FISSURE_Z) <= sz / 2.0, inside.shape) & upper
        added[horizontal] = np.maximum(added[horizontal], min(1.0, _FISSURE_MM / sz) * contrast)
    view = hu[box]
    view[inside] += added[inside]
    return lobes


def _surface_point(grid: _Grid, lobe: np.ndarray, towards: tuple[float, float, float]) -> np.ndarray:
    """The farthest point of ``lobe`` (x, y, z mm) on the ray from its centre along ``towards``.

    The ray starts at the lobe voxel nearest to the lobe's centre of mass (a curved lobe's centre
    may lie outside it) and is sampled every half voxel.
    """
    indices = np.argwhere(lobe)
    points = np.column_stack([grid.x[indices[:, 2]], grid.y[indices[:, 1]], grid.z[indices[:, 0]]])
    start = points[np.argmin(((points - points.mean(axis=0)) ** 2).sum(axis=1))]
    direction = np.asarray(towards, dtype=float) / np.linalg.norm(towards)
    sz, sy, sx = grid.spacing
    step = 0.5 * min(sz, sy, sx)
    ray = start + np.arange(0.0, 500.0, step)[:, None] * direction
    index = np.rint(
        np.column_stack([(ray[:, 2] - grid.z[0]) / sz, (ray[:, 1] - grid.y[0]) / sy, (ray[:, 0] - grid.x[0]) / sx])
    ).astype(np.intp)
    valid = np.all((index >= 0) & (index < np.asarray(lobe.shape)), axis=1)
    hits = np.zeros(len(ray), dtype=bool)
    hits[valid] = lobe[tuple(index[valid].T)]
    found: np.ndarray = ray[np.nonzero(hits)[0][-1]]
    return found


def _grow_lesions(grid: _Grid, lobes: Mapping[str, np.ndarray], specs: Sequence[LesionSpec]) -> dict[str, np.ndarray]:
    """Masks of the ground-glass and consolidation lesions, each the voxels of its lobe nearest its seed.

    Taking exactly ``round(fraction * lobe voxels)`` voxels (the nearest not yet taken by an
    earlier lesion) makes the lesion's share of the lobe exact to one voxel; the nearest voxels
    to a point on the lobe's surface form a ball cut by the pleura and the fissures.
    """
    shape = next(iter(lobes.values())).shape
    out = {kind: np.zeros(shape, dtype=bool) for kind in ("ggo", "consolidation")}
    for lobe_name in LOBE_NAMES:
        asked = sum(spec.fraction for spec in specs if spec.lobe == lobe_name)
        if asked > 1.0 + 1e-9:
            raise ValueError(f"lesions of {lobe_name} cover {asked:.3f} of the lobe, more than all of it")
    taken = np.zeros(shape, dtype=bool)
    for spec in specs:
        lobe = lobes[spec.lobe]
        total = int(np.count_nonzero(lobe))
        if total == 0:
            raise ValueError(f"lobe {spec.lobe} is not in the field of view; no lesion can grow there")
        wanted = min(round(spec.fraction * total), total)
        seed = _surface_point(grid, lobe, spec.towards)
        box = _bounding_box(lobe)
        free = np.nonzero(lobe[box] & ~taken[box])
        offsets = (
            grid.z[box[0]][free[0]] - seed[2],
            grid.y[box[1]][free[1]] - seed[1],
            grid.x[box[2]][free[2]] - seed[0],
        )
        distance = offsets[0] ** 2 + offsets[1] ** 2 + offsets[2] ** 2
        chosen = np.argsort(distance, kind="stable")[:wanted]
        grown = np.zeros(lobe[box].shape, dtype=bool)
        grown[tuple(axis[chosen] for axis in free)] = True
        out[spec.kind][box] |= grown
        taken[box] |= grown
    return out


def _render(
    grid: _Grid,
    *,
    consolidation: bool,
    touching: bool,
    table_posterior: bool,
    contrast: bool,
    lesions: Sequence[LesionSpec],
    seed: int,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Paint the anatomy on the generation grid; returns HU with the truth masks, and the lobes."""
    shape = (grid.z.size, grid.y.size, grid.x.size)
    rng = np.random.default_rng(seed)
    hu = np.full(shape, _AIR_HU, dtype=np.float32)
    layout = _layout(touching)
    blood = _CONTRAST_BLOOD_HU if contrast else _BLOOD_HU

    table_y = (130.0, 142.0) if table_posterior else (-142.0, -130.0)
    table = (grid.y[:, None] >= table_y[0]) & (grid.y[:, None] <= table_y[1]) & (np.abs(grid.x[None, :]) <= 200)
    hu[:, table] = _TABLE_HU
    ax, ay = _BODY_SEMI_AXES
    radius = np.sqrt((grid.x[None, :] / ax) ** 2 + (grid.y[:, None] / ay) ** 2)
    hu[:, radius <= 1.0] = _FAT_HU
    hu[:, radius <= 0.9] = _MUSCLE_HU
    hu[:, radius <= 0.84] = _SOFT_TISSUE_HU
    from_rib_centre = grid.z - 28.0 * np.round(grid.z / 28.0)
    for rib_slice in np.nonzero((np.abs(from_rib_centre) <= 5.0) & (grid.z >= -145.0))[0]:
        hu[rib_slice][_ribs(grid, layout, float(grid.z[rib_slice]))] = _BONE_HU
    sternum = (np.abs(grid.x[None, :]) <= 15.0) & (grid.y[:, None] >= -100.0) & (grid.y[:, None] <= -88.0)
    hu[:, sternum] = _BONE_HU
    hu[:, (grid.x[None, :] ** 2 + (grid.y[:, None] - 62.0) ** 2) <= 20.0**2] = _SPINE_HU

    inner = radius <= 0.84
    domes = {name: _dome_top(layout[f"{name}_centre"][0], layout[f"{name}_centre"][2]) for name in ("right", "left")}
    x_plane, y_plane = grid.x[None, :], grid.y[:, None]
    for k, z in enumerate(grid.z):
        under_right = _below_dome(x_plane, y_plane, np.float64(z), domes["right"]) & (x_plane < 0.0)
        under_left = _below_dome(x_plane, y_plane, np.float64(z), domes["left"]) & (x_plane >= 0.0)
        hu[k][(under_right | under_left) & inner] = _LIVER_HU
    gas = np.zeros(shape, dtype=bool)
    _paint(gas, _ellipsoid(grid, (layout["left_centre"][0] - 5.0, -10.0, -95.0), (35.0, 30.0, 18.0)), True)
    hu[gas] = _AIR_HU

    mediastinum = np.zeros(shape, dtype=bool)
    _paint(mediastinum, _ellipsoid(grid, (15.0, -35.0, -45.0), (65.0, 50.0, 55.0)), True)
    _paint(mediastinum, _tube(grid, (22.0, 38.0, 60.0), (22.0, 38.0, -150.0), 13.0), True)
    hu[mediastinum] = blood
    _paint(mediastinum, _tube(grid, (0.0, 62.0, 400.0), (0.0, 62.0, -400.0), 24.0), True)

    lungs = {}
    for name, side in (("right", -1.0), ("left", 1.0)):
        centre, semi = layout[f"{name}_centre"], layout[f"{name}_semi"]
        box, inside = _ellipsoid(grid, centre, semi)
        x, y, z = grid.coords(box)
        inside &= ~_below_dome(x, y, z, domes[name])
        if touching:
            inside &= (x >= 0.0) if side > 0 else (x < 0.0)
        mask = np.zeros(shape, dtype=bool)
        mask[box] = inside
        mask &= ~mediastinum
        hu[mask] = _LUNG_HU
        lungs[name] = mask

    carina = (0.0, -25.0, 60.0)
    airway_segments = (
        ((0.0, -25.0, 400.0), carina, 9.0),
        (carina, (-48.0, -10.0, 28.0), 7.0),
        (carina, (52.0, -5.0, 12.0), 6.0),
    )
    lumen = np.zeros(shape, dtype=bool)
    for start, end, r in airway_segments:
        _paint(lumen, _tube(grid, start, end, r), True)
    for mask in lungs.values():
        mask &= ~lumen
    lobes: dict[str, np.ndarray] = {}
    for name in ("right", "left"):
        lobes.update(_lobes_and_fissures(grid, name, lungs[name], hu))

    for name, side in (("right", -1.0), ("left", 1.0)):
        for start, end, r in _vessels(rng, side, layout[f"{name}_centre"]):
            _paint(hu, _tube(grid, start, end, r), blood)

    for start, end, r in airway_segments:
        _paint(hu, _tube(grid, start, end, r + 2.5), _AIRWAY_WALL_HU)
    hu[lumen] = _AIR_HU

    grown = _grow_lesions(grid, lobes, lesions)
    dense = grown["consolidation"]
    if consolidation:
        patch = np.zeros(shape, dtype=bool)
        _paint(patch, _ellipsoid(grid, (-97.0, 55.0, -30.0), (18.0, 18.0, 20.0)), True)
        dense |= patch & lungs["right"]
    hu[grown["ggo"]] = _GGO_HU
    hu[dense] = _CONSOLIDATION_HU
    arrays = {
        "hu": hu,
        "left": lungs["left"],
        "right": lungs["right"],
        "airway": lumen,
        "consolidation": dense,
        "ggo": grown["ggo"],
        "gas": gas,
    }
    return arrays, {name: lobes[name] for name in LOBE_NAMES}


def _reconstruct(hu: np.ndarray, kernel: str, spacing_yx: tuple[float, float]) -> None:
    """Imitate a reconstruction kernel in place, slice by slice (kernels act within the slice).

    A soft kernel is a Gaussian blur; a sharp one adds back the difference to the blur (an unsharp
    mask), which gives the dark and bright overshoot along edges that sharp kernels show.
    """
    if kernel == "none":
        return
    sigma = tuple(_KERNEL_SIGMA_MM[kernel] / s for s in spacing_yx)
    for k in range(hu.shape[0]):
        blurred = ndimage.gaussian_filter(hu[k], sigma)
        hu[k] = blurred if kernel == "soft" else 2.0 * hu[k] - blurred


def chest_phantom(
    shape_zyx: tuple[int, int, int],
    spacing_zyx: tuple[float, float, float],
    *,
    patient_position: str = "HFS",
    consolidation: bool = False,
    touching_lungs: bool = False,
    lesions: Sequence[LesionSpec] = (),
    kernel: str = "none",
    contrast: bool = False,
    noise_hu: float = 15.0,
    seed: int = 0,
) -> Phantom:
    """Generate a synthetic chest CT with known lungs, lobes and lesions.

    The anatomy is centred in the field of view (lungs about 1.7 L each, centre of the lungs at
    the centre slice), so a z extent of about 300 mm shows apex, carina, lung bases and the
    stomach bubble.

    Parameters
    ----------
    shape_zyx, spacing_zyx : tuple
        Grid size and voxel spacing in mm, ``[slice, row, column]``.
    patient_position : {"HFS", "HFP", "FFS", "FFP"}
        DICOM Patient Position; sets the orientation of the grid (and which side the table is)
        exactly as a scanner would, so that left/right labelling can be tested on prone and
        feet-first scans.
    consolidation : bool
        Add a dense (+30 HU) patch against the posterolateral pleura of the right lung (mostly in
        the lower lobe), part of the true right lung.
    touching_lungs : bool
        Place the lungs so that they meet in the midline (truth split at x = 0).
    lesions : sequence of LesionSpec
        Lesions to grow, each covering a known fraction of one lobe.
    kernel : {"none", "soft", "sharp"}
        Reconstruction kernel to imitate before noise is added (:data:`KERNELS`).
    contrast : bool
        Intravenous contrast: heart, great vessels and pulmonary vessels at +250 HU.
    noise_hu : float
        Standard deviation of additive Gaussian noise.
    seed : int
        Seed of the vessel layout and the noise.

    Returns
    -------
    Phantom
        HU volume, truth masks and geometry.

    Raises
    ------
    ValueError
        For an unknown position or kernel, a bad grid, or lesions that do not fit their lobe.
    """
    if patient_position not in PATIENT_POSITIONS:
        raise ValueError(f"patient_position must be one of {sorted(PATIENT_POSITIONS)}, got {patient_position!r}")
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if len(shape_zyx) != 3 or min(shape_zyx) < 1 or min(spacing_zyx) <= 0:
        raise ValueError(f"need a positive 3-D shape and spacing, got {shape_zyx} and {spacing_zyx}")
    nz, ny, nx = shape_zyx
    sz, sy, sx = spacing_zyx
    grid = _Grid(
        x=(np.arange(nx) - (nx - 1) / 2.0) * sx,
        y=(np.arange(ny) - (ny - 1) / 2.0) * sy,
        z=(np.arange(nz) - (nz - 1) / 2.0) * sz,
        spacing=(float(sz), float(sy), float(sx)),
    )
    row, column = PATIENT_POSITIONS[patient_position]
    parts, lobes = _render(
        grid,
        consolidation=consolidation,
        touching=touching_lungs,
        table_posterior=column[1] > 0,
        contrast=contrast,
        lesions=lesions,
        seed=seed,
    )
    hu = parts["hu"]
    _reconstruct(hu, kernel, (sy, sx))
    rng = np.random.default_rng(seed + 1)
    for k in range(nz):
        hu[k] += rng.standard_normal((ny, nx), dtype=np.float32) * np.float32(noise_hu)

    normal = np.cross(row, column)
    flips = (normal[2] < 0, column[1] < 0, row[0] < 0)
    index = tuple(slice(None, None, -1) if flip else slice(None) for flip in flips)
    arrays = {name: np.ascontiguousarray(array[index]) for name, array in parts.items()}
    origin = (
        float(grid.x[-1] if flips[2] else grid.x[0]),
        float(grid.y[-1] if flips[1] else grid.y[0]),
        float(grid.z[-1] if flips[0] else grid.z[0]) - 400.0,
    )
    direction = np.column_stack([row, column, normal])
    geometry = Geometry(
        origin=origin,
        spacing=(float(sz), float(sy), float(sx)),
        direction=tuple((float(r[0]), float(r[1]), float(r[2])) for r in direction),
        shape=(nz, ny, nx),
    )
    return Phantom(
        geometry=geometry,
        patient_position=patient_position,
        lobes={name: np.ascontiguousarray(mask[index]) for name, mask in lobes.items()},
        **arrays,
    )


#: Materials of :func:`densitometry_phantom` (index = code in ``DensitometryPhantom.material``) and their
#: HU, one in each density band: tissue outside the lungs, well-aerated parenchyma, ground glass
#: (poorly aerated), consolidation (non-aerated), emphysema, a contrast-enhanced vessel (above +100
#: HU) and the dense ball (consolidation density; its edge voxels are partial volumes with parenchyma).
DENSITOMETRY_MATERIALS: Mapping[str, float] = {
    "outside": 40.0,
    "parenchyma": -850.0,
    "ground_glass": -500.0,
    "consolidation": 30.0,
    "emphysema": -980.0,
    "vessel": 200.0,
    "dense_ball": 40.0,
}
#: A cluster population whose cumulative size distribution is exactly Y(>= s) = 128 (s / 2)^-1 at
#: s = 2, 4, 8, 16, 32 voxels: (size in voxels, number of clusters) pairs, so D = 1.
D1_CLUSTERS: tuple[tuple[int, int], ...] = ((2, 64), (4, 32), (8, 16), (16, 8), (32, 8))
#: Index boxes ``[z, y, x]`` of the two box-shaped lungs of the densitometry phantom.  The right lung
#: spans 72 slices (24 per third), the left 66 (22 per third), so every zone boundary falls between
#: slices and each third of each lung is known by slice index.
_DENSITOMETRY_LUNGS = {
    "lung_right": (slice(4, 76), slice(8, 52), slice(8, 50)),
    "lung_left": (slice(7, 73), slice(8, 52), slice(60, 102)),
}
_DENSITOMETRY_SHAPE = (80, 60, 110)
#: Cells of the emphysema clusters in the left upper third: a cluster fills its cell's corner box of
#: 2 x 4 x 4 voxels in raster order (so every cluster is face-connected) and the cell's last layer on
#: each axis stays parenchyma, so no two clusters touch.
_CLUSTER_CELL = (3, 5, 5)
_CLUSTER_BOX = (2, 4, 4)
#: Columns (x voxels) of the consolidation block against the right lung's lateral surface: the
#: deepest is 4 columns from the nearest outside voxel centre, 8 mm at 2 mm spacing, inside the
#: 10 mm rind.  (Six columns put the sixth 12 mm deep, in the core, against the documented layout.)
_CONSOLIDATION_DEPTH = 4
#: Sub-samples per axis of a voxel for the partial volume of the dense ball.
_BALL_SUPERSAMPLING = 8


@dataclass(frozen=True)
class DensitometryPhantom:
    """Two box-shaped lungs with known materials per zone, for exact densitometry truth.

    ``material[z, y, x]`` is the index in :data:`DENSITOMETRY_MATERIALS` of the voxel's material
    (crisp everywhere but at the edge of the dense ball); ``ball_fraction`` the share of each
    voxel inside the dense ball (sub-sampled :data:`_BALL_SUPERSAMPLING` times per axis); the HU of
    a voxel is its material's, or for a voxel the ball touches ``f * 40 + (1 - f) * (-850)``.
    ``lung_boxes`` gives each lung's index box; ``ball_centre_zyx`` and ``ball_radius_mm`` the
    ball (in index and mm); ``clusters`` the emphysema population as (size in voxels, count).
    """

    hu: np.ndarray
    left: np.ndarray
    right: np.ndarray
    material: np.ndarray
    ball_fraction: np.ndarray
    geometry: Geometry
    lung_boxes: Mapping[str, tuple[slice, slice, slice]]
    ball_centre_zyx: tuple[float, float, float]
    ball_radius_mm: float
    clusters: tuple[tuple[int, int], ...]

    @property
    def ball_volume_ml(self) -> float:
        """Exact volume of the dense ball, 4/3 pi r^3 (mL)."""
        return 4.0 / 3.0 * np.pi * self.ball_radius_mm**3 / 1000.0

    def volume(self) -> Volume:
        """The phantom as a :class:`Volume` with synthetic, stable SOP Instance UIDs."""
        return _as_volume(self.hu, self.geometry, "lungcds-densitometry-phantom")


def _ball_fraction(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], centre: tuple[float, float, float], radius: float
) -> np.ndarray:
    """Share of each voxel inside a ball (index-space centre, radius in mm), by sub-sampling."""
    fraction = np.zeros(shape, dtype=np.float32)
    m = _BALL_SUPERSAMPLING
    offsets = (np.arange(m) + 0.5) / m - 0.5
    reach = [int(np.ceil(radius / s)) + 1 for s in spacing]
    box = tuple(
        slice(max(int(np.floor(c)) - r, 0), min(int(np.ceil(c)) + r + 1, n))
        for c, r, n in zip(centre, reach, shape, strict=True)
    )
    axes = [
        ((np.arange(b.start, b.stop)[:, None] + offsets[None, :]) - c) * s
        for b, c, s in zip(box, centre, spacing, strict=True)
    ]
    dz = axes[0][:, None, None, :, None, None] ** 2
    dy = axes[1][None, :, None, None, :, None] ** 2
    dx = axes[2][None, None, :, None, None, :] ** 2
    inside = (dz + dy + dx) <= radius**2
    fraction[box] = inside.mean(axis=(3, 4, 5), dtype=np.float64).astype(np.float32)
    return fraction


def _place_clusters(
    material: np.ndarray, zone: tuple[slice, slice, slice], clusters: Sequence[tuple[int, int]]
) -> None:
    """Paint the emphysema clusters, largest first, one per cell of the zone box, in raster order of cells."""
    code = list(DENSITOMETRY_MATERIALS).index("emphysema")
    capacity = int(np.prod(_CLUSTER_BOX))
    counts = [(zone[a].stop - zone[a].start) // _CLUSTER_CELL[a] for a in range(3)]
    cells = iter(np.ndindex(*counts))
    for size, count in sorted(clusters, reverse=True):
        if not 1 <= size <= capacity:
            raise ValueError(f"a cluster holds 1 to {capacity} voxels, got {size}")
        shape_in_box = np.zeros(capacity, dtype=bool)
        shape_in_box[:size] = True
        block = shape_in_box.reshape(_CLUSTER_BOX)
        for _ in range(count):
            cell = next(cells, None)
            if cell is None:
                raise ValueError(f"{sum(n for _, n in clusters)} clusters do not fit in {int(np.prod(counts))} cells")
            origin = [zone[a].start + cell[a] * _CLUSTER_CELL[a] for a in range(3)]
            target = material[tuple(slice(o, o + b) for o, b in zip(origin, _CLUSTER_BOX, strict=True))]
            target[block] = code


def densitometry_phantom(
    spacing_zyx: tuple[float, float, float] = (2.5, 2.0, 2.0),
    *,
    clusters: Sequence[tuple[int, int]] = D1_CLUSTERS,
    ball_radius_mm: float = 12.0,
) -> DensitometryPhantom:
    """Two box lungs with one known material population per zone, noise-free.

    Layout (zones as :mod:`models.qct.zones` defines them; each box lung's thirds are slice ranges):

    - parenchyma at -850 HU (well aerated) everywhere not listed below;
    - ``RU``: a contrast-enhanced vessel, +200 HU, 3 x 3 voxels through the whole third;
    - ``RM``: a consolidation block, +30 HU, 20 x 20 x :data:`_CONSOLIDATION_DEPTH` voxels against
      the right lung's lateral surface (so all of it lies in the peripheral rind while the column
      spacing is at most 2.5 mm: its deepest voxel centre is then at most 10 mm from the nearest
      voxel centre outside the lung);
    - ``RL``: the dense ball, +40 HU, radius ``ball_radius_mm``, centred in the third, with
      partial-volume edges;
    - ``LU``: the emphysema clusters (-980 HU) of ``clusters``;
    - ``LM``: a ground-glass block, -500 HU, 22 x 22 x 25 voxels (the full height of the third);
    - ``LL``: parenchyma only.

    Parameters
    ----------
    spacing_zyx : tuple of float, optional
        Voxel spacing (mm); the layout is in voxels, so the volumes scale with it.
    clusters : sequence of (int, int), optional
        Emphysema clusters as (size in voxels, 1-32; number of clusters); default
        :data:`D1_CLUSTERS` (D = 1 exactly).
    ball_radius_mm : float, optional
        Radius of the dense ball; it must stay inside ``RL`` and away from the lung surface.

    Returns
    -------
    DensitometryPhantom
        The CT in HU with its materials and truth.

    Raises
    ------
    ValueError
        If the clusters do not fit their zone or the ball does not fit its zone.
    """
    shape = _DENSITOMETRY_SHAPE
    names = list(DENSITOMETRY_MATERIALS)
    material = np.zeros(shape, dtype=np.uint8)
    left = np.zeros(shape, dtype=bool)
    right = np.zeros(shape, dtype=bool)
    right[_DENSITOMETRY_LUNGS["lung_right"]] = True
    left[_DENSITOMETRY_LUNGS["lung_left"]] = True
    material[left | right] = names.index("parenchyma")
    rz, ry, rx = _DENSITOMETRY_LUNGS["lung_right"]
    lz, ly, lx = _DENSITOMETRY_LUNGS["lung_left"]
    material[52:76, 28:31, 28:31] = names.index("vessel")
    material[30:50, 20:40, rx.start : rx.start + _CONSOLIDATION_DEPTH] = names.index("consolidation")
    material[29:51, 15:37, 70:95] = names.index("ground_glass")
    _place_clusters(material, (slice(51, 73), ly, lx), clusters)
    centre = (16.0, 30.0, 29.0)
    reach = [ball_radius_mm / s for s in spacing_zyx]
    if (
        centre[0] - reach[0] < rz.start
        or centre[0] + reach[0] > 28
        or centre[2] - reach[2] < rx.start + _CONSOLIDATION_DEPTH
    ):
        raise ValueError(f"a ball of radius {ball_radius_mm} mm does not fit inside the right lower third")
    fraction = _ball_fraction(shape, spacing_zyx, centre, ball_radius_mm)
    material[fraction > 0] = names.index("dense_ball")
    values = np.array([DENSITOMETRY_MATERIALS[name] for name in names], dtype=np.float32)
    hu = values[material]
    edge = fraction > 0
    parenchyma, ball = DENSITOMETRY_MATERIALS["parenchyma"], DENSITOMETRY_MATERIALS["dense_ball"]
    hu[edge] = fraction[edge] * np.float32(ball) + (1.0 - fraction[edge]) * np.float32(parenchyma)
    geometry = Geometry(
        origin=(0.0, 0.0, 0.0),
        spacing=(float(spacing_zyx[0]), float(spacing_zyx[1]), float(spacing_zyx[2])),
        direction=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
        shape=shape,
    )
    return DensitometryPhantom(
        hu=hu,
        left=left,
        right=right,
        material=material,
        ball_fraction=fraction,
        geometry=geometry,
        lung_boxes=dict(_DENSITOMETRY_LUNGS),
        ball_centre_zyx=centre,
        ball_radius_mm=ball_radius_mm,
        clusters=tuple(clusters),
    )


def _stored_values(hu: np.ndarray) -> np.ndarray:
    """HU as int16 stored values for Rescale Intercept -1024, Slope 1."""
    return np.clip(np.rint(hu + 1024.0), -32768, 32767).astype(np.int16)


def _series_dataset(
    geometry: Geometry,
    *,
    patient_id: str,
    patient_name: str,
    patient_age: str,
    patient_sex: str,
    study_uid: str,
    series_uid: str,
    slice_thickness: float,
    patient_position: str,
) -> Dataset:
    """The attributes shared by every slice of the series (CT Image IOD, PS3.3 A.3)."""
    now = datetime.now(UTC)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = now.strftime("%H%M%S")
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.Manufacturer = "lungcds"
    ds.ManufacturerModelName = "synthetic chest phantom"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "SYNTHETIC PHANTOM - NOT A PATIENT"
    ds.SeriesDescription = "Synthetic chest CT phantom"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = patient_sex
    ds.PatientAge = patient_age
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = f"{slice_thickness:g}"
    ds.KVP = "120"
    ds.PatientPosition = patient_position
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[study_uid, "frame-of-reference"])
    ds.PositionReferenceIndicator = ""
    direction = np.asarray(geometry.direction, dtype=float)
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*direction[:, 0], *direction[:, 1])]
    ds.PixelSpacing = [f"{geometry.spacing[1]:.6g}", f"{geometry.spacing[2]:.6g}"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = geometry.shape[1], geometry.shape[2]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "-600"
    ds.WindowWidth = "1500"
    ds.BurnedInAnnotation = "NO"
    return ds


def write_ct_series(
    phantom_or_hu: Phantom | np.ndarray,
    geometry: Geometry | None,
    out_dir: Path,
    *,
    patient_id: str,
    patient_name: str,
    patient_age: str,
    patient_sex: str,
    study_uid: str | None = None,
    series_uid: str | None = None,
    slice_thickness: float,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> list[Path]:
    """Write a HU volume as a CT Image Storage series, one file per slice.

    Stored values are int16 with Rescale Intercept -1024 and Slope 1 (so -1024 ... 31743 HU are
    representable).  SOP Instance UIDs are derived from the Series Instance UID and the slice
    index, so writing the same series twice gives the same files.

    Parameters
    ----------
    phantom_or_hu : Phantom or numpy.ndarray
        A phantom, or a ``[z, y, x]`` HU array.
    geometry : Geometry or None
        Geometry of the array; ``None`` to use the phantom's own.
    out_dir : pathlib.Path
        Directory to write into (created if missing).
    patient_id, patient_name, patient_age, patient_sex : str
        Patient module values; ``patient_age`` as an Age String such as ``"058Y"``.
    study_uid, series_uid : str, optional
        UIDs to use; new ones are generated when omitted.
    slice_thickness : float
        Slice Thickness in mm (a reconstruction property, not derivable from the spacing).
    transfer_syntax : str
        Transfer syntax UID: Explicit or Implicit VR Little Endian, or a compressed syntax that
        pydicom can encode here (RLE Lossless, JPEG-LS Lossless, JPEG 2000 Lossless).

    Returns
    -------
    list of pathlib.Path
        The written files, in slice order.
    """
    if isinstance(phantom_or_hu, Phantom):
        hu, geometry = phantom_or_hu.hu, geometry or phantom_or_hu.geometry
        position = phantom_or_hu.patient_position
    else:
        if geometry is None:
            raise ValueError("a geometry is required when writing a plain HU array")
        hu, position = phantom_or_hu, "HFS"
    if tuple(hu.shape) != tuple(geometry.shape):
        raise ValueError(f"array shape {hu.shape} differs from geometry shape {geometry.shape}")
    study_uid = study_uid or str(generate_uid())
    series_uid = series_uid or str(generate_uid())
    syntax = UID(transfer_syntax)
    shared = _series_dataset(
        geometry,
        patient_id=patient_id,
        patient_name=patient_name,
        patient_age=patient_age,
        patient_sex=patient_sex,
        study_uid=study_uid,
        series_uid=series_uid,
        slice_thickness=slice_thickness,
        patient_position=position,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(hu.shape[0]):
        ds = Dataset()
        ds.update(shared)
        sop_uid = generate_uid(entropy_srcs=[series_uid, str(k)])
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = k + 1
        position_mm = geometry.index_to_patient((k, 0, 0))
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position_mm]
        ds.SliceLocation = f"{float(np.dot(position_mm, np.asarray(geometry.direction)[:, 2])):.6f}"
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        pixels = _stored_values(hu[k])
        if syntax.is_compressed:
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.compress(syntax, pixels, generate_instance_uid=False)
            ds.LossyImageCompression = "00"
        else:
            ds.file_meta.TransferSyntaxUID = syntax
            ds.PixelData = pixels.tobytes()
        path = out_dir / f"CT{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=True)
        paths.append(path)
    logger.info("wrote %d CT slices to %s", len(paths), out_dir)
    return paths
