"""CO-RADS preprocessing (thesis 3.3.4) on synthetic volumes with known lungs and on a real CT."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
import pytest

from models.corads.preprocessing import (
    PreprocessingConfig,
    ResampleToSpacingd,
    WindowIntensityd,
    build_transforms,
    preprocess,
)
from models.findings import Geometry, Volume

LUNG_VALUE = (-850.0 + 1100.0) / 1400.0
IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def _chest(
    shape: tuple[int, int, int] = (60, 320, 340),
    spacing: tuple[float, float, float] = (2.5, 1.2, 1.1),
    centre: tuple[float, float, float] = (30.0, 150.0, 170.0),
) -> tuple[Volume, np.ndarray]:
    """Axial LPS volume: air, a soft-tissue body and an ellipsoidal 'lung' at ``centre`` (index)."""
    z = np.arange(shape[0])[:, None, None] * spacing[0]
    y = np.arange(shape[1])[None, :, None] * spacing[1]
    x = np.arange(shape[2])[None, None, :] * spacing[2]
    cz, cy, cx = (c * s for c, s in zip(centre, spacing, strict=True))
    hu = np.full(shape, -1000.0, dtype=np.float32)
    body = ((y - cy) / 100.0) ** 2 + ((x - cx) / 115.0) ** 2 < 1.0
    hu[np.broadcast_to(body, shape)] = 40.0
    lungs = ((z - cz) / 50.0) ** 2 + ((y - cy) / 70.0) ** 2 + ((x - cx) / 95.0) ** 2 < 1.0
    hu[lungs] = -850.0
    geometry = Geometry(origin=(-120.0, -100.0, -70.0), spacing=spacing, direction=IDENTITY, shape=shape)
    return Volume(hu=hu, geometry=geometry, source_sop_instance_uids=("",) * shape[0]), lungs


def _resampled_lung_slices(volume: Volume, lungs: np.ndarray, config: PreprocessingConfig) -> np.ndarray:
    """Slices of the 1.5 mm grid that contain lung, from the first three transforms."""
    data: dict[Hashable, Any] = {"image": volume.hu, "lung": lungs, "geometry": volume.geometry}
    for transform in build_transforms(config).transforms[:3]:
        data = transform(data)
    return np.flatnonzero(data["lung"].any(axis=(1, 2)))


def test_geometry_of_the_thesis_input_on_a_known_lung() -> None:
    volume, lungs = _chest()
    config = PreprocessingConfig()
    # The lung mask doubles as "lesion map", so channel 2 shows where the lung went.
    prepared = preprocess(volume, lungs, lungs.astype(np.float32))
    record = prepared.record
    assert prepared.tensor.shape == (3, 128, 240, 240)
    assert record.spacing_mm == 1.5
    assert record.resampled_shape == (99, 256, 249)  # floor((n - 1) * s / 1.5) + 1 per axis

    # Centred: the crop centre is the lung's centre in patient space, and the lung sits in the
    # middle of the 240 x 240 block.
    expected_centre = np.asarray(volume.geometry.index_to_patient((30.0, 150.0, 170.0)))
    assert np.allclose(record.mask_centre_mm, expected_centre, atol=1.5)
    assert np.allclose(record.crop_centre_mm[:2], record.mask_centre_mm[:2], atol=0.75)
    lung_in_block = prepared.tensor[1].numpy() > 0.5
    rows, columns = np.nonzero(lung_in_block.any(axis=0))
    assert abs((rows.min() + rows.max()) / 2 - 119.5) <= 1.0
    assert abs((columns.min() + columns.max()) / 2 - 119.5) <= 1.0
    inside = prepared.tensor[0].numpy()[prepared.tensor[1].numpy() > 0.99]
    assert np.median(inside) == pytest.approx(LUNG_VALUE) and np.allclose(inside, LUNG_VALUE, atol=0.01)

    # Slices: everything less than 10 mm from the lung (6 slices of 1.5 mm on either side).
    lung_slices = _resampled_lung_slices(volume, lungs, config)
    assert record.kept_slices == tuple(range(lung_slices[0] - 6, lung_slices[-1] + 7))
    kept = np.asarray(record.kept_slices)
    expected = kept[np.floor(np.linspace(0, len(kept) - 1, 128) + 0.5).astype(int)]
    assert record.sampled_slices == tuple(expected.tolist())
    assert not lung_in_block[0].any() and not lung_in_block[-1].any()
    assert not record.padded and record.lesion_map_used


def test_orientation_does_not_matter() -> None:
    axial, lungs = _chest(shape=(40, 120, 130), spacing=(3.0, 1.6, 1.5), centre=(20.0, 55.0, 70.0))
    # The same patient stored as a sagittal stack: slices along +x, rows head to feet, columns +y.
    hu = np.ascontiguousarray(np.transpose(axial.hu[::-1], (2, 0, 1)))
    sagittal_lungs = np.ascontiguousarray(np.transpose(lungs[::-1], (2, 0, 1)))
    nz = axial.hu.shape[0]
    geometry = Geometry(
        origin=axial.geometry.index_to_patient((nz - 1.0, 0.0, 0.0)),
        spacing=(1.5, 3.0, 1.6),
        direction=((0.0, 0.0, 1.0), (1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
        shape=(hu.shape[0], hu.shape[1], hu.shape[2]),
    )
    sagittal = Volume(hu=hu, geometry=geometry, source_sop_instance_uids=("",) * hu.shape[0])
    config = PreprocessingConfig(crop_size=(96, 96), slices=32)
    a = preprocess(axial, lungs, config=config)
    s = preprocess(sagittal, sagittal_lungs, config=config)
    assert s.record.axes == (1, 2, 0) and s.record.flipped == (True, False, False)
    assert np.allclose(a.record.crop_centre_mm, s.record.crop_centre_mm)
    assert np.allclose(a.tensor.numpy(), s.tensor.numpy(), atol=1e-6)


def test_channels_with_and_without_a_lesion_map() -> None:
    volume, lungs = _chest(shape=(30, 100, 100), spacing=(4.0, 2.0, 2.0), centre=(15.0, 50.0, 50.0))
    config = PreprocessingConfig(crop_size=(64, 64), slices=20)
    plain = preprocess(volume, lungs, config=config).tensor
    assert plain.dtype.is_floating_point and plain.shape == (3, 20, 64, 64)
    assert np.array_equal(plain[0], plain[1]) and np.array_equal(plain[0], plain[2])
    lesion = np.zeros(volume.hu.shape, dtype=np.float32)
    lesion[10:20, 40:60, 40:60] = 1.0
    with_map = preprocess(volume, lungs, lesion, config).tensor
    assert np.array_equal(with_map[0], plain[0])
    assert with_map[1].max() == 1.0 and with_map[1].min() == 0.0
    assert not with_map[2].any()


def test_window_and_linear_resampling_are_exact() -> None:
    window = WindowIntensityd(["image"], (-1100.0, 300.0))
    values = window({"image": np.asarray([[[-2000.0, -1100.0, -400.0, 300.0, 1000.0]]])})["image"]
    assert np.allclose(values, [0.0, 0.0, 0.5, 1.0, 1.0])
    # A linear ramp along z is reproduced exactly by linear interpolation at 1.5 mm.
    ramp = np.broadcast_to(np.arange(11, dtype=np.float32)[:, None, None] * 5.0, (11, 2, 2)).copy()
    geometry = Geometry(origin=(0.0, 0.0, 0.0), spacing=(5.0, 1.5, 1.5), direction=IDENTITY, shape=(11, 2, 2))
    out = ResampleToSpacingd(["image"], 1.5)({"image": ramp, "geometry": geometry})
    assert out["image"].shape == (34, 2, 2)  # 50 mm / 1.5 mm + 1
    assert np.allclose(out["image"][:, 0, 0], np.arange(34) * 1.5, atol=1e-4)


def test_small_fields_of_view_are_padded_with_air() -> None:
    volume, lungs = _chest(shape=(30, 80, 80), spacing=(4.0, 2.0, 2.0), centre=(15.0, 40.0, 40.0))
    prepared = preprocess(volume, lungs, config=PreprocessingConfig(slices=16))
    assert prepared.record.padded
    assert prepared.tensor.shape == (3, 16, 240, 240)
    assert not prepared.tensor[:, :, :5].any() and not prepared.tensor[:, :, -5:].any()


def test_bad_masks_are_refused() -> None:
    volume, lungs = _chest(shape=(20, 40, 40), spacing=(4.0, 4.0, 4.0), centre=(10.0, 20.0, 20.0))
    with pytest.raises(ValueError, match="empty"):
        preprocess(volume, np.zeros_like(lungs))
    with pytest.raises(ValueError, match="boolean"):
        preprocess(volume, lungs.astype(np.uint8))
    with pytest.raises(ValueError, match="lesion map shape"):
        preprocess(volume, lungs, np.zeros((2, 2, 2)))


def test_real_chest_ct(real_chest: tuple[Volume, np.ndarray]) -> None:
    volume, lungs = real_chest
    prepared = preprocess(volume, lungs, lungs.astype(np.float32))
    record = prepared.record
    assert prepared.tensor.shape == (3, 128, 240, 240)
    assert record.spacing_mm == 1.5 and record.obliquity_deg < 1.0
    z_extent_mm = (volume.hu.shape[0] - 1) * volume.geometry.spacing[0]
    assert record.resampled_shape[0] == int(z_extent_mm / 1.5 + 1e-6) + 1
    # The lungs fill a good part of the block and are centred in it.
    lung = prepared.tensor[1].numpy() > 0.5
    assert lung.mean() > 0.1
    rows, columns = np.nonzero(lung.any(axis=0))
    assert abs((rows.min() + rows.max()) / 2 - 119.5) <= 1.0
    assert abs((columns.min() + columns.max()) / 2 - 119.5) <= 1.0
    # Every sampled slice is less than 10 mm from a lung slice.
    lung_slices = _resampled_lung_slices(volume, lungs, PreprocessingConfig())
    for index in record.sampled_slices:
        assert np.abs(lung_slices - index).min() * 1.5 < 10.0
    assert len(set(record.sampled_slices)) == min(128, len(record.kept_slices))
