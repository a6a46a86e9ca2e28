"""End to end with demo weights: full-size networks on a small synthetic chest.

Small windows (and, for S4, a small whole-volume shape) keep these runs to seconds; the networks
themselves are the full-size ones.  Demo weights are untrained, so the tests check the contract
(shapes, grid, lung and side constraints, tiling), not the anatomy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy import ndimage

from models.findings import LOBE_NAMES, Geometry, Volume
from models.segmentation.lesions import LesionSettings, build_lesion_network, segment_lesions
from models.segmentation.lobes import LobeSettings, build_lobe_network, segment_lobes
from models.segmentation.weights import demo_state

from .conftest import SyntheticChest

LOBE_TEST_SETTINGS = LobeSettings(spacing_mm=(4.0, 4.0, 4.0), patch=(32, 32, 64), overlap=0.25)


def _demo(build: Callable[[], torch.nn.Module], seed: int) -> torch.nn.Module:
    """A network with demo weights, built on the meta device so that no default init runs."""
    with torch.device("meta"):
        network = build()
    network = network.to_empty(device="cpu")
    demo_state(network, seed)
    return network


@pytest.fixture(scope="module")
def chest(chest_factory: Callable[..., SyntheticChest]) -> SyntheticChest:
    return chest_factory(11, shape=(48, 64, 64), spacing=(3.0, 3.0, 3.0))


def test_full_size_lobe_network_gives_lobes_that_tile_their_own_lung(chest: SyntheticChest) -> None:
    network = _demo(build_lobe_network, seed=0)
    masks = segment_lobes(chest.volume, chest.lung_left, chest.lung_right, network, settings=LOBE_TEST_SETTINGS)
    assert list(masks) == list(LOBE_NAMES)
    for name, mask in masks.items():
        assert mask.shape == chest.volume.hu.shape and mask.dtype == np.bool_
        lung = chest.lung_left if name in ("LUL", "LLL") else chest.lung_right
        assert not np.any(mask & ~lung), f"{name} leaves its lung"
        if mask.any():
            assert ndimage.label(mask, structure=np.ones((3, 3, 3)))[1] == 1, f"{name} is not one piece"
    assert np.array_equal(masks["LUL"].astype(int) + masks["LLL"], chest.lung_left.astype(int))
    assert np.array_equal(masks["RUL"].astype(int) + masks["RML"] + masks["RLL"], chest.lung_right.astype(int))


def test_lobes_do_not_depend_on_the_array_orientation(chest: SyntheticChest) -> None:
    """A series stored right-to-left and feet-first gives the same lobes in patient space."""
    network = build_lobe_network((4, 8, 16))
    demo_state(network, seed=1)
    settings = LobeSettings(spacing_mm=(4.0, 4.0, 4.0), patch=(16, 16, 16), overlap=0.25)
    plain = segment_lobes(chest.volume, chest.lung_left, chest.lung_right, network, settings=settings)
    flip = (slice(None, None, -1), slice(None), slice(None, None, -1))
    geometry = chest.volume.geometry
    mirrored = Volume(
        np.ascontiguousarray(chest.volume.hu[flip]),
        Geometry(
            geometry.origin, geometry.spacing, ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0)), geometry.shape
        ),
        chest.volume.source_sop_instance_uids,
    )
    other = segment_lobes(mirrored, chest.lung_left[flip], chest.lung_right[flip], network, settings=settings)
    for name in LOBE_NAMES:
        assert np.array_equal(other[name][flip], plain[name]), name


def test_full_size_nnunet_lesions_are_ggo_or_consolidation_inside_the_lungs(chest: SyntheticChest) -> None:
    network = _demo(lambda: build_lesion_network("nnunet"), seed=2)
    lungs = chest.labels > 0
    settings = LesionSettings(nnunet_spacing_mm=(4.0, 4.0, 4.0), nnunet_patch=(32, 32, 64), nnunet_overlap=0.25)
    masks = segment_lesions(chest.volume, lungs, network, kind="nnunet", settings=settings)
    assert set(masks) == {"lesions", "ggo", "consolidation"}
    assert all(m.shape == lungs.shape and m.dtype == np.bool_ for m in masks.values())
    assert np.array_equal(masks["lesions"], masks["ggo"] | masks["consolidation"])
    assert not np.any(masks["ggo"] & masks["consolidation"])
    assert not np.any(masks["lesions"] & ~lungs)


def test_full_size_s4_unet_lesions_inside_the_lungs(chest: SyntheticChest) -> None:
    network = _demo(lambda: build_lesion_network("resnet18_unet"), seed=3)
    lungs = chest.labels > 0
    masks = segment_lesions(
        chest.volume, lungs, network, kind="resnet18_unet", settings=LesionSettings(s4_shape=(8, 32, 32))
    )
    assert set(masks) == {"lesions"}
    assert masks["lesions"].shape == lungs.shape and masks["lesions"].dtype == np.bool_
    assert not np.any(masks["lesions"] & ~lungs)


def test_inputs_are_validated(chest: SyntheticChest) -> None:
    small = build_lobe_network((4, 8, 16))
    with pytest.raises(ValueError, match="overlap"):
        segment_lobes(chest.volume, chest.lung_left, chest.lung_left, small, settings=LOBE_TEST_SETTINGS)
    with pytest.raises(ValueError, match="shape"):
        segment_lobes(chest.volume, chest.lung_left[1:], chest.lung_right, small)
    with pytest.raises(ValueError, match="divisible"):
        segment_lobes(chest.volume, chest.lung_left, chest.lung_right, small, settings=LobeSettings(patch=(30, 32, 32)))
    with pytest.raises(ValueError, match="unknown lesion network"):
        segment_lesions(chest.volume, chest.labels > 0, small, kind="unet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must have 3 outputs"):
        segment_lesions(
            chest.volume,
            chest.labels > 0,
            small,
            kind="nnunet",
            settings=LesionSettings(nnunet_spacing_mm=(6.0, 6.0, 6.0), nnunet_patch=(16, 16, 16)),
        )


class _MustNotRun(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the network ran although there is no lung")


def test_no_lung_gives_empty_masks_without_running_a_network(chest: SyntheticChest) -> None:
    nothing = np.zeros(chest.volume.hu.shape, dtype=bool)
    lobes = segment_lobes(chest.volume, nothing, nothing, _MustNotRun())
    lesions = segment_lesions(chest.volume, nothing, _MustNotRun(), kind="nnunet")
    assert set(lobes) == set(LOBE_NAMES) and set(lesions) == {"lesions", "ggo", "consolidation"}
    assert not any(m.any() for m in (*lobes.values(), *lesions.values()))
    assert all(m.shape == nothing.shape for m in (*lobes.values(), *lesions.values()))
