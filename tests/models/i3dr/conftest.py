"""Fixtures for the I3Dr tests: small configurations, a phantom with lobes, the shared real chest CT."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from models.findings import Volume
from models.i3dr.model import BackboneSpec
from models.i3dr.preprocessing import I3drPreprocessingConfig
from models.lungmask import segment_lungs
from models.phantom import Phantom, chest_phantom
from models.volume import load_series

DATA_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "data"
REAL_SERIES = "lung-dx-a0001-chest-5mm-s2"

#: Small network inputs for tests that run networks: 8 mm voxels, 32^3 blocks (256 mm).
SMALL_INPUT = I3drPreprocessingConfig(spacing_mm=8.0, size=(32, 32, 32))
#: A small backbone without normalisation (same code path as I3D through the models).
SMALL_BACKBONE = BackboneSpec("small_3d", {"widths": (4, 8)})


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: on the shared 2-core machine a second thread mostly waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def small_phantom() -> Phantom:
    """A coarse phantom (6 mm slices, 3.6 mm pixels) with its true lobes."""
    return chest_phantom((48, 96, 96), (6.0, 3.6, 3.6), seed=1)


@pytest.fixture(scope="session")
def real_chest() -> tuple[Volume, np.ndarray]:
    """The real 5 mm chest CT (Lung-PET-CT-Dx, TCIA) and its classical lung mask."""
    folder = DATA_DIR / "ct" / REAL_SERIES
    if not folder.is_dir():
        pytest.skip(f"shared test data absent: {folder} (a fresh clone has no ../shared/data)")
    volume = load_series(sorted(p for p in folder.iterdir() if p.is_file()))
    lungs = segment_lungs(volume)
    return volume, lungs.left | lungs.right
