"""Fixtures for the CO-RADS tests: a small input configuration (the real chest CT, ``real_chest``,
and ``one_thread`` come from ``tests/models/conftest.py``)."""

from __future__ import annotations

import pytest

from models.corads.preprocessing import PreprocessingConfig

#: A small network input for tests that run networks: 4 mm voxels, 16 slices of 32 x 32.
SMALL_INPUT = PreprocessingConfig(spacing_mm=4.0, crop_size=(32, 32), slices=16)
#: A DenseNet-201 "3D" member shrunk for CPU tests (same code path, two short blocks).
SMALL_DENSENET = {"growth_rate": 8, "block_config": (2, 2), "num_init_features": 16, "bn_size": 2}


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Run on one intra-op thread: these tensors are small, and on a shared 2-core machine a
    second OpenMP thread mostly waits at barriers (10x slower passes were measured under load)."""
