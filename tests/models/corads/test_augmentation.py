"""The augmentation of thesis 3.3.5: units, axes and channels of each random transform."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from models.corads.augmentation import AugmentationConfig, augment_batch

NONE = AugmentationConfig(
    zoom=0.0, rotation_deg=0.0, shear=0.0, translation_voxels=(0.0, 0.0, 0.0), elastic_sd_voxels=0.0, noise_sd=0.0
)
SHAPE = (2, 3, 12, 48, 48)


def _ramp(axis: int) -> torch.Tensor:
    """A batch whose value is the voxel index along ``axis`` (2 = z, 3 = y, 4 = x)."""
    index = torch.arange(SHAPE[axis], dtype=torch.float32)
    view = [1] * 5
    view[axis] = SHAPE[axis]
    return index.reshape(view).expand(SHAPE).clone()


def _all_ct() -> torch.Tensor:
    return torch.ones(SHAPE[:2], dtype=torch.bool)


def test_no_ranges_is_the_identity() -> None:
    batch = torch.rand(SHAPE)
    assert torch.allclose(augment_batch(batch, _all_ct(), NONE), batch, atol=1e-5)


def test_translation_is_in_voxels_along_the_right_axes() -> None:
    z_only = dataclasses.replace(NONE, translation_voxels=(2.0, 0.0, 0.0))
    generator = torch.Generator().manual_seed(0)
    out = augment_batch(_ramp(2), _all_ct(), z_only, generator)
    interior = out[:, :, 3:-3, 5:-5, 5:-5]
    shift = interior - _ramp(2)[:, :, 3:-3, 5:-5, 5:-5]
    assert shift.abs().max() <= 2.0 + 1e-4
    assert shift.abs().max() > 0.05  # it did move
    assert torch.allclose(shift, shift[:, :, :1, :1, :1].expand_as(shift), atol=1e-4)  # rigidly
    x_only = dataclasses.replace(NONE, translation_voxels=(0.0, 0.0, 20.0))
    out = augment_batch(_ramp(3), _all_ct(), x_only, generator)
    columns = out[:, :, :, :, 21:27]  # always inside after a shift of at most 20 voxels
    assert torch.allclose(columns, _ramp(3)[:, :, :, :, 21:27], atol=1e-4)  # y untouched


def test_rotation_is_axial() -> None:
    rotation = dataclasses.replace(NONE, rotation_deg=15.0)
    generator = torch.Generator().manual_seed(1)
    out = augment_batch(_ramp(2), _all_ct(), rotation, generator)
    centre = out[:, :, :, 16:32, 16:32]  # inside the image for any 15 degree rotation
    assert torch.allclose(centre, _ramp(2)[:, :, :, 16:32, 16:32], atol=1e-4)  # z unchanged
    moved = augment_batch(_ramp(4), _all_ct(), rotation, torch.Generator().manual_seed(1))
    assert not torch.allclose(moved[:, :, :, 16:32, 16:32], _ramp(4)[:, :, :, 16:32, 16:32], atol=0.1)


def test_elastic_deformation_stays_in_the_axial_plane() -> None:
    elastic = dataclasses.replace(NONE, elastic_sd_voxels=3.0)
    out = augment_batch(_ramp(2), _all_ct(), elastic, torch.Generator().manual_seed(2))
    assert torch.allclose(out[:, :, :, 14:34, 14:34], _ramp(2)[:, :, :, 14:34, 14:34], atol=1e-4)
    moved = augment_batch(_ramp(3), _all_ct(), elastic, torch.Generator().manual_seed(2))
    assert (moved - _ramp(3))[:, :, :, 14:34, 14:34].abs().max() > 0.5


def test_noise_goes_only_to_ct_channels_and_identically() -> None:
    noise = dataclasses.replace(NONE, noise_sd=0.01)
    batch = torch.rand(SHAPE[0], 1, *SHAPE[2:]).expand(SHAPE).clone()
    ct = torch.tensor([[True, True, True], [True, False, False]])
    out = augment_batch(batch, ct, noise, torch.Generator().manual_seed(3))
    assert torch.equal(out[0, 0], out[0, 1]) and torch.equal(out[0, 0], out[0, 2])
    assert not torch.equal(out[1, 0], batch[1, 0])
    assert torch.allclose(out[1, 1:], batch[1, 1:], atol=1e-5)  # lesion map and zero channel: no noise
    assert 0 < float((out[1, 0] - batch[1, 0]).std()) <= 0.0101


def test_same_generator_seed_same_augmentation() -> None:
    batch = torch.rand(SHAPE)
    first = augment_batch(batch, _all_ct(), AugmentationConfig(), torch.Generator().manual_seed(4))
    second = augment_batch(batch, _all_ct(), AugmentationConfig(), torch.Generator().manual_seed(4))
    assert torch.equal(first, second)
    assert not torch.allclose(first, batch)


def test_invalid_ranges_are_refused() -> None:
    with pytest.raises(ValueError):
        AugmentationConfig(zoom=1.0)
    with pytest.raises(ValueError):
        augment_batch(torch.rand(2, 3, 4, 4), torch.ones(2, 3, dtype=torch.bool), NONE)
