"""Fixtures for the STOIC volume-member tests: one thread, synthetic volumes, the real chest CT."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from models.findings import Geometry, Volume
from models.qct.lungmask import LungSegmentation
from models.stoic.member import MemberInputs

#: A 40 x 64 x 64 synthetic scan at 2.5 x 2 x 2 mm whose lung mask is one box, known exactly.
SYNTHETIC_SHAPE = (40, 64, 64)
SYNTHETIC_SPACING = (2.5, 2.0, 2.0)
LUNG_BOX = ((10, 29), (16, 47), (8, 55))

#: uaux2's DenseNet and ResNet-34 at a size every test can afford (the inputs are the tests' own).
SMALL_UAUX2_NETWORKS: dict[str, Any] = {
    "growth_rate": 4,
    "block_config": (1, 1),
    "init_features": 4,
    "head": (4, 4, 4),
    "resnet_layers": (1, 1, 1, 1),
    "resnet_width": 4,
}


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs with one intra-op thread (``one_thread`` of ``tests/models/conftest.py``)."""


def box_mask(shape: tuple[int, int, int], box: tuple[tuple[int, int], ...]) -> np.ndarray:
    """A boolean mask that is True inside the inclusive ``box``."""
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(lo, hi + 1) for lo, hi in box)] = True
    return mask


@pytest.fixture
def synthetic_inputs() -> MemberInputs:
    """A synthetic scan: HU ramps along x (-1000 at x=0 to 600) plus 10 HU per slice, lungs = LUNG_BOX,
    a lesion of 2 x 4 x 4 voxels inside them, age 67, sex F."""
    z, _, x = np.meshgrid(*(np.arange(n) for n in SYNTHETIC_SHAPE), indexing="ij")
    hu = (-1000.0 + 1600.0 * x / (SYNTHETIC_SHAPE[2] - 1) + 10.0 * z).astype(np.float32)
    geometry = Geometry(
        origin=(-64.0, -64.0, 0.0),
        spacing=SYNTHETIC_SPACING,
        direction=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
        shape=SYNTHETIC_SHAPE,
    )
    volume = Volume(hu=hu, geometry=geometry, source_sop_instance_uids=("",) * SYNTHETIC_SHAPE[0])
    lungs = box_mask(SYNTHETIC_SHAPE, LUNG_BOX)
    lesions = box_mask(SYNTHETIC_SHAPE, ((14, 15), (20, 23), (20, 23)))
    return MemberInputs(volume, lungs, lungs, np.zeros_like(lungs), lesions, 67.0, "F")


@pytest.fixture(scope="session")
def real_inputs(chest_5mm: Volume, chest_5mm_lungs: LungSegmentation) -> MemberInputs:
    """The real 64-slice 5 mm chest CT (Lung-PET-CT-Dx, TCIA) with its classical lung masks, 58 y, male."""
    left, right = chest_5mm_lungs.left, chest_5mm_lungs.right
    return MemberInputs(chest_5mm, left | right, left, right, None, 58.0, "M")
