"""Fixtures for the STOIC member tests: one intra-op thread, the real chest CT with its lung mask,
and one synthetic training set shared by the learning tests."""

from __future__ import annotations

import numpy as np
import pytest

from models.findings import Volume
from models.qct.lungmask import LungSegmentation
from models.stoic.member import MemberInputs
from tests.models.stoic.synthetic import SyntheticSet, synthetic_case, write_training_set


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs with one intra-op thread (``one_thread`` of ``tests/models/conftest.py``)."""


@pytest.fixture(scope="session")
def real_inputs(chest_5mm: Volume, chest_5mm_lungs: LungSegmentation) -> MemberInputs:
    """The real 64-slice 5 mm chest CT (Lung-PET-CT-Dx, TCIA), its classical lung masks, lesions
    standing in as lung above -700 HU, 58 y, male."""
    lungs = chest_5mm_lungs.left | chest_5mm_lungs.right
    return MemberInputs(
        volume=chest_5mm,
        lungs=lungs,
        lung_left=chest_5mm_lungs.left,
        lung_right=chest_5mm_lungs.right,
        lesions=lungs & (chest_5mm.hu > -700),
        age_years=58.0,
        sex="M",
    )


@pytest.fixture(scope="session")
def synthetic_inputs() -> MemberInputs:
    """One synthetic severe COVID-19 case (24 x 64 x 64 voxels of 5 x 3 x 3 mm), 58 y, male."""
    volume, right, left, lesions = synthetic_case(np.random.default_rng(3), covid=1, severe=1)
    return MemberInputs(volume, left | right, left, right, lesions, age_years=58.0, sex="M")


@pytest.fixture(scope="session")
def training_set(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSet:
    """Synthetic cases on disk: a training CSV and a held-out CSV (see :mod:`.synthetic`)."""
    return write_training_set(tmp_path_factory.mktemp("stoic_synthetic"), seed=7)


@pytest.fixture(scope="session")
def rng() -> np.random.Generator:
    """A seeded generator for tests that need random arrays."""
    return np.random.default_rng(2021)
