"""Fixtures for the CO-RADS tests: a small input configuration and the shared real chest CT."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from models.corads.preprocessing import PreprocessingConfig
from models.findings import Volume
from models.lungmask import segment_lungs
from models.volume import load_series

DATA_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "data"
REAL_SERIES = "lung-dx-a0001-chest-5mm-s2"

#: A small network input for tests that run networks: 4 mm voxels, 16 slices of 32 x 32.
SMALL_INPUT = PreprocessingConfig(spacing_mm=4.0, crop_size=(32, 32), slices=16)
#: A DenseNet-201 "3D" member shrunk for CPU tests (same code path, two short blocks).
SMALL_DENSENET = {"growth_rate": 8, "block_config": (2, 2), "num_init_features": 16, "bn_size": 2}


@pytest.fixture(scope="session")
def real_chest() -> tuple[Volume, np.ndarray]:
    """The real 5 mm chest CT (Lung-PET-CT-Dx, TCIA) and its classical lung mask."""
    folder = DATA_DIR / "ct" / REAL_SERIES
    if not folder.is_dir():
        pytest.skip(f"shared test data absent: {folder} (a fresh clone has no ../shared/data)")
    volume = load_series(sorted(p for p in folder.iterdir() if p.is_file()))
    lungs = segment_lungs(volume)
    return volume, lungs.left | lungs.right


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Run on one intra-op thread: these tensors are small, and on a shared 2-core machine a
    second OpenMP thread mostly waits at barriers (10x slower passes were measured under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
