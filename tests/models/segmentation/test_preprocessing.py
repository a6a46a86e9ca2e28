"""Preprocessing transforms and their inverse; post-processing of label maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.segmentation.inference import argmax_on_grid, sliding_window_inferer
from models.segmentation.postprocessing import largest_component, tile_region
from models.segmentation.preprocessing import IntensityWindow, Orientation, build_preprocessing, to_ct_grid

IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def _data(
    image: np.ndarray, direction: object = IDENTITY, spacing: tuple[float, ...] = (2.0, 1.0, 1.0)
) -> dict[str, object]:
    return {"image": image, "spacing": spacing, "direction": direction, "lungs": image > 0}


def test_orientation_of_a_feet_first_prone_series_round_trips() -> None:
    # Rows run to the patient's right, columns to the front, slices towards the feet.
    direction = ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0))
    orientation = Orientation.from_direction(direction)
    assert orientation.order == (0, 1, 2) and orientation.flips == (True, True, True)
    array = np.arange(24).reshape(2, 3, 4)
    assert np.array_equal(orientation.invert(orientation.apply(array)), array)


def test_a_coronal_series_is_brought_to_the_axial_canonical_order() -> None:
    # Coronal: rows to the left (+x), columns to the feet (-z), slices to the back (+y).
    direction = ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, -1.0, 0.0))
    orientation = Orientation.from_direction(direction)
    array = np.zeros((5, 6, 7))  # [slices (y), rows (z), columns (x)]
    assert orientation.apply(array).shape == (6, 5, 7)
    assert orientation.flips == (True, False, False)
    assert orientation.permute((3.0, 0.5, 0.7)) == (0.5, 3.0, 0.7)


def test_mirrored_acquisition_gives_the_same_canonical_image() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(6, 8, 10)).astype(np.float32)
    mirrored_direction = ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    chain = build_preprocessing(window=IntensityWindow(-3, 3), crop_mask_key=None, crop_margin_mm=0, spacing=(2, 1, 1))
    plain = chain(_data(image))["image"]
    mirrored = chain(_data(image[:, :, ::-1].copy(), mirrored_direction))["image"]
    assert torch.equal(plain, mirrored)


def test_crop_resample_and_back_to_the_ct_grid() -> None:
    image = np.zeros((10, 20, 30), dtype=np.float32)
    image[3:6, 5:12, 8:20] = 1.0
    direction = ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))
    chain = build_preprocessing(
        window=IntensityWindow(0, 1),
        crop_mask_key="lungs",
        crop_margin_mm=2.0,
        spacing=(1.5, 1.5, 1.5),
        mask_keys=("lungs",),
    )
    data = chain(_data(image, direction))
    assert data["crop_shape"] == (3 + 2, 7 + 4, 12 + 4)  # margin of 1 slice (2 mm) and 2 pixels (1 mm)
    assert tuple(data["image"].shape) == (1, 7, 7, 11)  # (5 * 2, 11, 16) mm / 1.5 mm, rounded
    assert data["spacing"] == pytest.approx((10 / 7, 11 / 7, 16 / 11))  # extent kept exactly
    back = to_ct_grid(data["lungs"], data, image.shape, fill=False)
    assert np.array_equal(back, image > 0)


def test_zscore_window_is_nnunet_normalisation() -> None:
    window = IntensityWindow.zscore(-1000, 100, mean=-450, std=550)
    assert (window.out_lower, window.out_upper) == (-1.0, 1.0)
    chain = build_preprocessing(window=window, crop_mask_key=None, crop_margin_mm=0, shape=(1, 1, 3))
    out = chain(_data(np.array([[[-2000.0, -450.0, 650.0]]], dtype=np.float32)))["image"]
    assert out.flatten().tolist() == pytest.approx([-1.0, 0.0, 1.0])
    with pytest.raises(ValueError):
        IntensityWindow(5, 5)


def test_three_channel_input_repeats_the_grey_image() -> None:
    chain = build_preprocessing(
        window=IntensityWindow(0, 1), crop_mask_key=None, crop_margin_mm=0, shape=(2, 4, 4), channels=3
    )
    out = chain(_data(np.random.default_rng(1).random((4, 8, 8)).astype(np.float32)))["image"]
    assert out.shape == (3, 2, 4, 4) and torch.equal(out[0], out[2])


def test_argmax_on_grid_restricts_the_competing_channels() -> None:
    probabilities = torch.zeros(3, 2, 2, 2)
    probabilities[0] = 0.6
    probabilities[1, :, :, 0] = 0.3
    probabilities[2, :, :, 1] = 0.3
    assert argmax_on_grid(probabilities, (2, 2, 2), [0, 1, 2]).max() == 0
    restricted = argmax_on_grid(probabilities, (4, 4, 4), [1, 2])
    assert restricted.shape == (4, 4, 4)
    assert set(np.unique(restricted[:, :, 0])) == {0} and set(np.unique(restricted[:, :, 3])) == {1}


def test_tile_region_moves_fragments_to_the_nearest_kept_lobe() -> None:
    region = np.zeros((1, 5, 12), dtype=bool)
    region[0, 1:4, 1:11] = True
    labels = np.zeros_like(region, dtype=np.int8)
    labels[0, 1:4, 1:6] = 1
    labels[0, 1:4, 6:11] = 2
    labels[0, 2, 9] = 1  # a fragment of lobe 1 inside lobe 2
    labels[0, 2, 3] = 0  # an unassigned voxel inside lobe 1
    tiled = tile_region(labels, region, (1.0, 1.0, 1.0))
    assert tiled[0, 2, 9] == 2 and tiled[0, 2, 3] == 1
    assert np.array_equal(tiled > 0, region)
    assert not tile_region(labels, np.zeros_like(region), (1.0, 1.0, 1.0)).any()


def test_largest_component_keeps_one_piece() -> None:
    mask = np.zeros((3, 3, 9), dtype=bool)
    mask[1, 1, 0:4] = True
    mask[1, 1, 6:8] = True
    assert largest_component(mask).sum() == 4


def test_sliding_window_inferer_rejects_bad_overlap() -> None:
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_inferer((32, 32, 32), 1.0)
