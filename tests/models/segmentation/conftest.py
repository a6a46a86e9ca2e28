"""Fixtures of the segmentation tests: a synthetic chest with five lobes, and small settings.

The synthetic chest is a body cylinder with two air-filled lungs; the left lung is cut by one
oblique fissure into an upper and a lower lobe, the right lung by an oblique and a horizontal
fissure into three.  Fissures are drawn denser than lung (as on CT), and the heart indents the
left lung, so the two sides differ as they do in patients.  Sizes and fissure positions vary
with the seed, so held-out volumes are new to a network trained on others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from models.findings import Geometry, Volume

#: Identity direction: array axis 2 runs to the patient's left, 1 to the back, 0 to the head.
IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


@dataclass(frozen=True)
class SyntheticChest:
    """A synthetic CT with its lobe labels (0 background, 1-5 in LOBE_NAMES order)."""

    volume: Volume
    labels: np.ndarray

    @property
    def lung_left(self) -> np.ndarray:
        """Left lung: LUL and LLL."""
        out: np.ndarray = (self.labels == 1) | (self.labels == 2)
        return out

    @property
    def lung_right(self) -> np.ndarray:
        """Right lung: RUL, RML and RLL."""
        out: np.ndarray = self.labels >= 3
        return out


def synthetic_chest(
    seed: int, shape: tuple[int, int, int] = (40, 48, 64), spacing: tuple[float, float, float] = (4.0, 4.0, 4.0)
) -> SyntheticChest:
    """Build one synthetic chest; the same seed gives the same volume."""
    rng = np.random.default_rng(seed)
    z, y, x = (np.arange(n, dtype=np.float32)[:, None, None] for n in shape)
    y, x = y.reshape(1, -1, 1), x.reshape(1, 1, -1)
    nz, ny, nx = shape
    hu = np.full(shape, -1000.0, dtype=np.float32)
    body = ((x - nx / 2) / (0.46 * nx)) ** 2 + ((y - ny / 2) / (0.46 * ny)) ** 2 < 1
    hu[np.broadcast_to(body, shape)] = 40.0
    labels = np.zeros(shape, dtype=np.int8)
    centre_z = nz / 2 + rng.uniform(-2, 2)
    half_z = nz * rng.uniform(0.36, 0.42)
    for side, sign in (("right", -1.0), ("left", 1.0)):
        cx = nx / 2 + sign * nx * rng.uniform(0.19, 0.22)
        lung = (
            ((x - cx) / (nx * rng.uniform(0.15, 0.18))) ** 2
            + ((y - ny / 2) / (ny * rng.uniform(0.30, 0.35))) ** 2
            + ((z - centre_z) / half_z) ** 2
        ) < 1
        if side == "left":  # the heart: anterior (small y), medial, low
            heart = ((x - nx / 2 - 0.08 * nx) / (0.14 * nx)) ** 2 + ((y - 0.3 * ny) / (0.2 * ny)) ** 2 + (
                (z - centre_z + 0.3 * half_z) / (0.5 * half_z)
            ) ** 2 < 1
            lung &= ~heart
        # Oblique fissure: higher at the back (large y); lower lobe below it (small z = caudal).
        tilt = rng.uniform(0.5, 0.8)
        oblique = z - (centre_z + rng.uniform(-0.1, 0.1) * half_z + tilt * (y - ny / 2))
        lower = lung & (oblique < 0)
        upper = lung & (oblique >= 0)
        fissures = np.abs(oblique) < 0.7
        if side == "left":
            labels[lower], labels[upper] = 2, 1
        else:
            horizontal = z - (centre_z + rng.uniform(0.15, 0.3) * half_z)
            middle = upper & (horizontal < 0) & (y < ny / 2 + 0.1 * ny)
            labels[lower], labels[upper], labels[middle] = 5, 3, 4
            fissures |= (np.abs(horizontal) < 0.7) & (y < ny / 2 + 0.1 * ny) & (oblique >= 0)
        hu[lung] = -850.0
        hu[lung & fissures] = -600.0
    hu += rng.normal(0.0, 20.0, shape).astype(np.float32)
    geometry = Geometry((0.0, 0.0, 0.0), spacing, IDENTITY, shape)
    return SyntheticChest(Volume(hu, geometry, tuple(f"1.2.3.{k}" for k in range(nz))), labels)


@pytest.fixture(scope="session")
def chest_factory() -> Callable[..., SyntheticChest]:
    """The synthetic chest builder (a fixture so that test modules need not import conftest)."""
    return synthetic_chest


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Run torch on one thread during these tests, then restore the setting.

    The two cores of a test machine are shared with other test runs; under that contention
    OpenMP worker threads spin waiting for a busy core, and a training step of the small lobe
    network took 2.3 s with two threads against 0.32 s with one (measured here).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
