"""Fixtures for the I3Dr tests: small configurations and a phantom with lobes (the real chest CT,
``real_chest``, and ``one_thread`` come from ``tests/models/conftest.py``)."""

from __future__ import annotations

import pytest

from models.i3dr.model import BackboneSpec
from models.i3dr.preprocessing import I3drPreprocessingConfig
from models.phantom import Phantom, chest_phantom

#: Small network inputs for tests that run networks: 8 mm voxels, 32^3 blocks (256 mm).
SMALL_INPUT = I3drPreprocessingConfig(spacing_mm=8.0, size=(32, 32, 32))
#: A small backbone without normalisation (same code path as I3D through the models).
SMALL_BACKBONE = BackboneSpec("small_3d", {"widths": (4, 8)})


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs with one intra-op thread."""


@pytest.fixture(scope="session")
def small_phantom() -> Phantom:
    """A coarse phantom (6 mm slices, 3.6 mm pixels) with its true lobes."""
    return chest_phantom((48, 96, 96), (6.0, 3.6, 3.6), seed=1)
