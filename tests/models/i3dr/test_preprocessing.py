"""I3Dr inputs (thesis 2.4.4): 1.6 mm isotropic, 240^3 blocks centred on the region, zero outside it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.findings import LOBE_NAMES, Volume
from models.i3dr.preprocessing import (
    I3drPreprocessingConfig,
    RegionInput,
    preprocess_regions,
    replicate_channels,
    stack_regions,
)
from models.phantom import Phantom, chest_phantom


def _bbox_centre(mask: np.ndarray) -> np.ndarray:
    centre = []
    for axis in range(3):
        found = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        centre.append((found[0] + found[-1]) / 2.0)
    return np.asarray(centre)


def _check_block(item: RegionInput, config: I3drPreprocessingConfig) -> None:
    assert item.image.shape == config.size and item.image.dtype == np.float32
    assert item.mask.shape == config.size and item.mask.any()
    assert item.record.spacing_mm == config.spacing_mm
    # Centred: the region's bounding box is centred in the block (within half a voxel).
    middle = (np.asarray(config.size) - 1) / 2.0
    assert np.abs(_bbox_centre(item.mask) - middle).max() <= 0.5
    # Outside the region everything is 0; inside, the windowed CT in [0, 1].
    assert not item.image[~item.mask].any()
    assert 0.0 <= item.image.min() and item.image.max() <= 1.0
    assert item.record.voxels_outside_block == 0
    assert item.record.region_voxels == int(item.mask.sum())


def test_phantom_regions_are_centred_masked_blocks() -> None:
    phantom = chest_phantom((60, 160, 160), (5.0, 2.2, 2.2), seed=2)
    config = I3drPreprocessingConfig()
    assert (config.spacing_mm, config.size, config.hu_window) == (1.6, (240, 240, 240), (-1100.0, 300.0))
    regions = {"lungs": phantom.left | phantom.right, **phantom.lobes}
    inputs = preprocess_regions(phantom.volume(), regions, config)
    assert list(inputs) == ["lungs", *LOBE_NAMES]
    for name, item in inputs.items():
        _check_block(item, config)
        # 1.6 mm isotropic: the region keeps its volume (mask resampled linearly, threshold 0.5).
        true_ml = float(regions[name].sum()) * phantom.geometry.voxel_volume_ml
        assert item.mask.sum() * 1.6**3 / 1000.0 == pytest.approx(true_ml, rel=0.03)
        assert item.record.resampled_shape == (185, 219, 219)  # 295 mm / 1.6 + 1, 349.8 mm / 1.6 + 1
        # The recorded centre is the region's bounding-box centre in patient space (to a 1.6 mm voxel).
        native = phantom.geometry.index_to_patient(tuple(_bbox_centre(regions[name])))
        assert np.abs(np.subtract(item.record.region_centre_mm, native)).max() <= 1.6
    # Lung parenchyma (-850 HU) maps to (-850 + 1100) / 1400 after windowing.
    lungs = inputs["lungs"]
    assert np.median(lungs.image[lungs.mask]) == pytest.approx(250.0 / 1400.0, abs=0.02)
    # Lobes are distinct crops: the left upper lobe's block starts further left than the right lower lobe's.
    left_x = inputs["LUL"].record.region_centre_mm[0]
    right_x = inputs["RLL"].record.region_centre_mm[0]
    assert left_x > 30.0 > -30.0 > right_x  # LPS: +x is the patient's left


def test_real_series_lung_block(real_chest: tuple[Volume, np.ndarray]) -> None:
    volume, lungs = real_chest
    config = I3drPreprocessingConfig()
    (item,) = preprocess_regions(volume, {"lungs": lungs}, config).values()
    _check_block(item, config)
    lung_ml = float(lungs.sum()) * volume.geometry.voxel_volume_ml
    assert item.mask.sum() * 1.6**3 / 1000.0 == pytest.approx(lung_ml, rel=0.03)
    assert item.record.padded  # 5 mm slices over 315 mm: z needs padding to 384 mm
    assert item.record.obliquity_deg == 0.0


def test_small_blocks_and_channel_replication(small_phantom: Phantom) -> None:
    config = I3drPreprocessingConfig(spacing_mm=8.0, size=(32, 32, 32))
    inputs = preprocess_regions(small_phantom.volume(), dict(small_phantom.lobes), config)
    for item in inputs.values():
        _check_block(item, config)
    stacked = stack_regions(list(inputs.values()))
    assert stacked.shape == (5, 1, 32, 32, 32)
    tripled = replicate_channels(stacked)
    assert tripled.shape == (5, 3, 32, 32, 32)
    assert torch.equal(tripled[:, 0], tripled[:, 2]) and torch.equal(tripled[:, 1], stacked[:, 0])
    with pytest.raises(ValueError, match="1, D, H, W"):
        replicate_channels(tripled)


def test_bad_masks_are_refused(small_phantom: Phantom) -> None:
    volume = small_phantom.volume()
    with pytest.raises(ValueError, match="empty"):
        preprocess_regions(volume, {"LUL": np.zeros(volume.hu.shape, dtype=bool)})
    with pytest.raises(ValueError, match="boolean"):
        preprocess_regions(volume, {"LUL": small_phantom.lobes["LUL"].astype(np.uint8)})
    with pytest.raises(ValueError, match="boolean"):
        preprocess_regions(volume, {"LUL": small_phantom.lobes["LUL"][:-1]})
