"""Synthetic chest volumes whose STOIC labels are their lesion burden, for the learning tests.

The chests are the CO-RADS tests' (:func:`tests.models.corads.synthetic.synthetic_chest`) with
15 mm blobs: each has a soft-tissue body, two aerated lungs (-850 HU) and ``burden`` ground-glass
blobs (-300 HU spheres) at random places inside the lungs; lung sizes, positions and noise vary
from case to case, so the only thing that predicts the labels is the amount of ground glass:
COVID-19 when there is any (``burden >= 1``), severe from three blobs on (``burden >= 3``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tests.models.corads.synthetic import synthetic_chest, write_nifti

BLOB_RADIUS_MM = 15.0
SEVERE_FROM = 3


def labels(burden: int) -> tuple[int, int]:
    """``(covid, severe)`` of a burden."""
    return int(burden >= 1), int(burden >= SEVERE_FROM)


def write_csv(folder: Path, cases_per_burden: int, seed: int, burdens: Sequence[int] = range(5)) -> Path:
    """NIfTI images, lung and lesion masks of synthetic cases, and the STOIC training CSV (the first
    case of each burden has no age)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["image,lung_mask,lesion_mask,age,sex,covid,severe"]
    for burden in burdens:
        for i in range(cases_per_burden):
            volume, lungs, lesions = synthetic_chest(rng, burden, BLOB_RADIUS_MM)
            name = f"b{burden}_{i}"
            write_nifti(volume.hu, volume.geometry, folder / f"{name}.nii.gz")
            write_nifti(lungs.astype(np.uint8), volume.geometry, folder / f"{name}_lungs.nii.gz")
            write_nifti(lesions.astype(np.uint8), volume.geometry, folder / f"{name}_lesions.nii.gz")
            covid, severe = labels(burden)
            age = "" if i == 0 else f"{rng.uniform(40.0, 90.0):.0f}"
            sex = "F" if i % 2 else "M"
            lines.append(f"{name}.nii.gz,{name}_lungs.nii.gz,{name}_lesions.nii.gz,{age},{sex},{covid},{severe}")
    path = folder / "cases.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
