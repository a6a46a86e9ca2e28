"""Synthetic chest CTs whose STOIC labels are their lesion burden, for the learning tests.

Each volume has a soft-tissue body, two aerated lungs (-850 HU) whose size and position vary, and
ground-glass blobs (-300 HU, 12 mm) inside the lungs: none without COVID-19, two to four for
non-severe COVID-19, eight to twelve (a quarter of them consolidation, +20 HU) for severe
COVID-19.  The lung mask file uses the U-Net R231 labels (1 right, 2 left), the lesion mask
file is binary.  Age and sex are random and carry no signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.findings import Geometry, Volume
from tests.models.corads.synthetic import write_nifti

SHAPE = (24, 64, 64)
SPACING = (5.0, 3.0, 3.0)
BLOB_RADIUS_MM = 12.0
GEOMETRY = Geometry(
    origin=(-96.0, -96.0, -60.0),
    spacing=SPACING,
    direction=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    shape=SHAPE,
)


@dataclass(frozen=True)
class SyntheticSet:
    """Training and held-out CSVs and their labels ``(covid, severe)`` per row."""

    train_csv: Path
    test_csv: Path
    train_labels: np.ndarray
    test_labels: np.ndarray


def synthetic_case(
    rng: np.random.Generator, covid: int, severe: int
) -> tuple[Volume, np.ndarray, np.ndarray, np.ndarray]:
    """HU volume, right lung, left lung and lesion mask of one case."""
    z, y, x = np.meshgrid(*(np.arange(n) * s for n, s in zip(SHAPE, SPACING, strict=True)), indexing="ij")
    cz, cy, cx = (n * s / 2.0 for n, s in zip(SHAPE, SPACING, strict=True))
    hu = np.full(SHAPE, -1000.0)
    hu[((y - cy) / 80.0) ** 2 + ((x - cx) / 88.0) ** 2 < 1.0] = 40.0
    shift_y, shift_x = rng.uniform(-6.0, 6.0, size=2)
    lungs = []
    for side in (-1.0, 1.0):  # -1: lower column index = patient right (identity direction, LPS)
        radii = rng.uniform([42.0, 40.0, 26.0], [52.0, 48.0, 32.0])
        lung = (
            ((z - cz) / radii[0]) ** 2
            + ((y - cy - shift_y) / radii[1]) ** 2
            + ((x - cx - shift_x - side * 40.0) / radii[2]) ** 2
        ) < 1.0
        hu[lung] = -850.0
        lungs.append(lung)
    both = lungs[0] | lungs[1]
    blobs = 0 if not covid else int(rng.integers(8, 13) if severe else rng.integers(2, 5))
    lesions = np.zeros(SHAPE, dtype=bool)
    candidates = np.argwhere(both)
    for i in range(blobs):
        centre = candidates[rng.integers(len(candidates))] * np.asarray(SPACING)
        blob = ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) < BLOB_RADIUS_MM**2
        blob &= both
        hu[blob] = 20.0 if severe and i % 4 == 0 else -300.0
        lesions |= blob
    hu += rng.normal(0.0, 15.0, size=SHAPE)
    volume = Volume(hu=hu.astype(np.float32), geometry=GEOMETRY, source_sop_instance_uids=("",) * SHAPE[0])
    return volume, lungs[0], lungs[1], lesions


def _labels(count: int) -> list[tuple[int, int]]:
    """Half negative, a quarter non-severe and a quarter severe COVID-19."""
    quarter = count // 4
    return [(0, 0)] * (count - 2 * quarter) + [(1, 0)] * quarter + [(1, 1)] * quarter


def _write_csv(folder: Path, name: str, labels: list[tuple[int, int]], rng: np.random.Generator) -> Path:
    lines = ["image,lung_mask,lesion_mask,age,sex,covid,severe"]
    for i, (covid, severe) in enumerate(labels):
        volume, right, left, lesions = synthetic_case(rng, covid, severe)
        stem = f"{name}{i:03d}"
        image = write_nifti(volume.hu, GEOMETRY, folder / f"{stem}.nii.gz").name
        lung = write_nifti(
            right.astype(np.uint8) + 2 * left.astype(np.uint8), GEOMETRY, folder / f"{stem}_lungs.nii.gz"
        ).name
        lesion = write_nifti(lesions.astype(np.uint8), GEOMETRY, folder / f"{stem}_lesions.nii.gz").name
        age = f"{rng.uniform(30, 90):.0f}"
        sex = str(rng.choice(["M", "F"]))
        lines.append(f"{image},{lung},{lesion},{age},{sex},{covid},{severe}")
    path = folder / f"{name}.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_training_set(folder: Path, seed: int, train: int = 64, test: int = 32) -> SyntheticSet:
    """Write ``train`` and ``test`` cases (half negative, a quarter severe) and their CSVs."""
    rng = np.random.default_rng(seed)
    train_labels, test_labels = _labels(train), _labels(test)
    return SyntheticSet(
        train_csv=_write_csv(folder, "train", train_labels, rng),
        test_csv=_write_csv(folder, "test", test_labels, rng),
        train_labels=np.asarray(train_labels),
        test_labels=np.asarray(test_labels),
    )
