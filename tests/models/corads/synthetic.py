"""Synthetic chest volumes whose CO-RADS label is their lesion burden, for the learning test.

Each volume has a soft-tissue body, two aerated lungs and ``CO-RADS - 1`` ground-glass blobs
(-300 HU spheres) at random places inside the lungs; lung positions, sizes and noise vary from
case to case, so the only thing that predicts the label is how much ground glass there is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from models.findings import Geometry, Volume

SHAPE = (20, 48, 48)
SPACING = (5.0, 3.0, 3.0)
BLOB_RADIUS_MM = 14.0


def synthetic_case(rng: np.random.Generator, corads: int) -> tuple[Volume, np.ndarray, np.ndarray]:
    """A volume in HU, its lung mask and its lesion mask, with ``corads - 1`` blobs."""
    return synthetic_chest(rng, corads - 1)


def synthetic_chest(
    rng: np.random.Generator, blobs: int, blob_radius_mm: float = BLOB_RADIUS_MM
) -> tuple[Volume, np.ndarray, np.ndarray]:
    """A volume in HU, its lung mask and its lesion mask, with ``blobs`` ground-glass spheres
    (shared with the STOIC volume members' learning tests, whose labels are the burden too)."""
    z, y, x = np.meshgrid(*(np.arange(n) * s for n, s in zip(SHAPE, SPACING, strict=True)), indexing="ij")
    centre_z, centre_y, centre_x = (n * s / 2.0 for n, s in zip(SHAPE, SPACING, strict=True))
    hu = np.full(SHAPE, -1000.0)
    body = ((y - centre_y) / 62.0) ** 2 + ((x - centre_x) / 68.0) ** 2 < 1.0
    hu[body] = 40.0
    lungs = np.zeros(SHAPE, dtype=bool)
    shift_y, shift_x = rng.uniform(-6.0, 6.0, size=2)
    for side in (-1.0, 1.0):
        radii = rng.uniform([32.0, 30.0, 20.0], [42.0, 38.0, 26.0])
        lungs |= (
            ((z - centre_z) / radii[0]) ** 2
            + ((y - centre_y - shift_y) / radii[1]) ** 2
            + ((x - centre_x - shift_x - side * 30.0) / radii[2]) ** 2
        ) < 1.0
    hu[lungs] = -850.0
    lesions = np.zeros(SHAPE, dtype=bool)
    candidates = np.argwhere(lungs)
    for _ in range(blobs):
        centre = candidates[rng.integers(len(candidates))] * np.asarray(SPACING)
        blob = ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) < blob_radius_mm**2
        lesions |= blob & lungs
    hu[lesions] = -300.0
    hu += rng.normal(0.0, 20.0, size=SHAPE)
    geometry = Geometry(
        origin=(-72.0, -72.0, -50.0),
        spacing=SPACING,
        direction=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
        shape=SHAPE,
    )
    volume = Volume(hu=hu.astype(np.float32), geometry=geometry, source_sop_instance_uids=("",) * SHAPE[0])
    return volume, lungs, lesions


def write_nifti(array: np.ndarray, geometry: Geometry, path: Path) -> Path:
    """Write a ``[z, y, x]`` array with its geometry as NIfTI (SimpleITK converts LPS to RAS)."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(reversed(geometry.spacing)))  # type: ignore[no-untyped-call]
    image.SetOrigin(geometry.origin)  # type: ignore[no-untyped-call]
    image.SetDirection(tuple(v for row in geometry.direction for v in row))  # type: ignore[no-untyped-call]
    sitk.WriteImage(image, str(path))
    return path


def write_csv(folder: Path, cases_per_category: int, seed: int) -> Path:
    """NIfTI images, lung masks and lesion maps of synthetic cases, and the CSV that lists them."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["image,corads,lung_mask,lesion_map"]
    for corads in range(1, 6):
        for i in range(cases_per_category):
            volume, lungs, lesions = synthetic_case(rng, corads)
            name = f"c{corads}_{i}"
            write_nifti(volume.hu, volume.geometry, folder / f"{name}.nii.gz")
            write_nifti(lungs.astype(np.uint8), volume.geometry, folder / f"{name}_lungs.nii.gz")
            write_nifti(lesions.astype(np.float32), volume.geometry, folder / f"{name}_lesions.nii.gz")
            lines.append(f"{name}.nii.gz,{corads},{name}_lungs.nii.gz,{name}_lesions.nii.gz")
    path = folder / "cases.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
