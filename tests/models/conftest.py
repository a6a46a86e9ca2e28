"""Fixtures for the models tests: the shared real CT series, phantoms and their segmentations.

Phantoms and segmentations are session-scoped because several tests look at the same one and
building them is the expensive part of this test package.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from models.findings import Volume
from models.phantom import Phantom, chest_phantom, write_ct_series
from models.qct.lungmask import LungSegmentation, segment_lungs
from models.volume import load_series

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
DCIODVFY = "/usr/bin/dciodvfy"


def _series_files(name: str) -> list[Path]:
    folder = DATA_DIR / "ct" / name
    if not folder.is_dir():
        pytest.skip(f"shared test data absent: {folder} (a fresh clone has no ../shared/data)")
    return sorted(p for p in folder.iterdir() if p.is_file())


@pytest.fixture(scope="session")
def real_series() -> Callable[[str], list[Path]]:
    """Files of a shared real series by folder name; skips when the shared data is absent."""
    return _series_files


@pytest.fixture(scope="session")
def chest_5mm() -> Volume:
    """The real 64-slice 5 mm chest CT (Lung-PET-CT-Dx, TCIA, CC BY 4.0)."""
    return load_series(_series_files("lung-dx-a0001-chest-5mm-s2"))


@pytest.fixture(scope="session")
def chest_5mm_lungs(chest_5mm: Volume) -> LungSegmentation:
    """The classical lung mask of the real 5 mm chest CT."""
    return segment_lungs(chest_5mm)


@pytest.fixture(scope="session")
def real_chest(chest_5mm: Volume, chest_5mm_lungs: LungSegmentation) -> tuple[Volume, np.ndarray]:
    """The real 5 mm chest CT and its classical lung mask (both lungs)."""
    return chest_5mm, chest_5mm_lungs.left | chest_5mm_lungs.right


@pytest.fixture(scope="session")
def phantom_5mm() -> Phantom:
    """5 mm slices at 1 mm in-plane (so the lung mask block-averages 2x2), with consolidation."""
    return chest_phantom((60, 384, 384), (5.0, 1.0, 1.0), consolidation=True)


@pytest.fixture(scope="session")
def phantom_5mm_lungs(phantom_5mm: Phantom) -> LungSegmentation:
    """The classical lung mask of :func:`phantom_5mm`."""
    return segment_lungs(phantom_5mm.volume())


@pytest.fixture(scope="session")
def dciodvfy() -> str:
    """Path of dicom3tools' IOD validator; skips when it is not installed."""
    if shutil.which(DCIODVFY) is None:
        pytest.skip(f"{DCIODVFY} not installed (Debian package dicom3tools)")
    return DCIODVFY


@pytest.fixture
def write_series(tmp_path: Path) -> Callable[..., list[Path]]:
    """Write a HU array (or phantom) as a CT series under ``tmp_path``; keywords override defaults."""

    def write(
        source: Phantom | np.ndarray, geometry: object = None, folder: str = "series", **kw: object
    ) -> list[Path]:
        options: dict[str, object] = {
            "patient_id": "PHANTOM-1",
            "patient_name": "Phantom^Chest",
            "patient_age": "050Y",
            "patient_sex": "O",
            "slice_thickness": 5.0,
        }
        options.update(kw)
        return write_ct_series(source, geometry, tmp_path / folder, **options)  # type: ignore[arg-type]

    return write


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks (1 for two empty masks)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


@pytest.fixture(scope="session")
def dice_score() -> Callable[[np.ndarray, np.ndarray], float]:
    """The Dice overlap function, as a fixture so test modules need not import each other."""
    return dice


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op torch thread during a test, the previous count restored after: CI's two cores
    are shared with other work and the networks under test are small.  A test folder uses it for
    all its tests with an autouse fixture that requests it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
