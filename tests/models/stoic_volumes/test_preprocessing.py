"""Each member's input as its authors built it: grid, crop placement, layout, intensities, patient data.

Synthetic scans have HU that ramp linearly along x and z, so resampling, cropping and flipping can
be checked against closed-form values; the real 64-slice chest CT checks the full-size geometry.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import ndimage

from models.findings import Geometry, Volume
from models.stoic.baseline import StoicBaseline
from models.stoic.code1055 import Code1055Config, StoicCode1055, code1055_input
from models.stoic.deakin import StoicDeakin
from models.stoic.flyingbird import StoicFlyingBird
from models.stoic.member import MemberInputs, MemberUnavailable
from models.stoic.uaux2 import IMAGENET_MEAN, IMAGENET_SD, StoicUaux2, infection_lung_ratio
from models.stoic.volumes import bounding_box, resample_like_simpleitk
from tests.models.stoic_volumes.conftest import LUNG_BOX, SMALL_UAUX2_NETWORKS, SYNTHETIC_SHAPE, box_mask

PAD_AFTER_SCALING = 1100.0 / 1400.0  # 0 HU in the [-1100, 300] window (BL preprocess.py)
SMALL_I3D = {"pool_kernel": (1, 1, 1)}
SMALL_CONVNEXT = {"dims": (4, 8, 8, 8), "depths": (1, 1, 1, 1), "folds": 1}
SMALL_RESNET = {"widths": (4, 4, 4, 4), "folds": 1}
SMALL_UAUX2 = {**SMALL_UAUX2_NETWORKS, "bag": 1}


def _ramp(inputs: MemberInputs, z: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The synthetic HU at fractional indices: -1000 + 1600 x / 63 + 10 z."""
    return -1000.0 + 1600.0 * x / (SYNTHETIC_SHAPE[2] - 1) + 10.0 * z


def test_simpleitk_resampling_keeps_origin_and_interpolates_linearly(synthetic_inputs: MemberInputs) -> None:
    volume = synthetic_inputs.volume
    resampled, geometry = resample_like_simpleitk(volume.hu, volume.geometry, (4.0, 4.0, 4.0))
    assert resampled.shape == (25, 32, 32) == geometry.shape  # round(40 x 2.5 / 4), round(64 x 2 / 4)
    k, _, i = np.meshgrid(*(np.arange(n) for n in resampled.shape), indexing="ij")
    expected = _ramp(synthetic_inputs, k * 4.0 / 2.5, i * 4.0 / 2.0)
    assert np.allclose(resampled, expected, atol=1e-2)
    assert geometry.origin == volume.geometry.origin and geometry.spacing == (4.0, 4.0, 4.0)


def test_baseline_keeps_the_last_slices_centres_y_x_and_windows(synthetic_inputs: MemberInputs) -> None:
    member = StoicBaseline.demo(0, spacing_mm=4.0, shape=(16, 16, 16), **SMALL_I3D)
    prepared = member.preprocess(synthetic_inputs)
    image = prepared.tensors["image"]
    assert tuple(image.shape) == (1, 16, 16, 16)
    assert prepared.record["crop_start"] == (25 - 16, 32 // 2 - 8, 32 // 2 - 8)
    resampled, _ = resample_like_simpleitk(synthetic_inputs.volume.hu, synthetic_inputs.volume.geometry, (4.0,) * 3)
    window = (np.clip(resampled[9:25, 8:24, 8:24], -1100, 300) + 1100) / 1400
    assert np.allclose(image[0].numpy(), window, atol=1e-6)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


def test_baseline_pads_with_0_hu_before_clipping(synthetic_inputs: MemberInputs) -> None:
    member = StoicBaseline.demo(0, spacing_mm=4.0, shape=(32, 16, 16), **SMALL_I3D)
    prepared = member.preprocess(synthetic_inputs)
    image = prepared.tensors["image"][0].numpy()
    assert prepared.record["crop_start"][0] == 25 - 32 and prepared.record["padded"]
    assert np.allclose(image[:7], PAD_AFTER_SCALING)  # the 7 missing slices come first (the z crop ends at the top)
    assert not np.allclose(image[7], PAD_AFTER_SCALING)


def test_deakin_input_is_the_baseline_input(synthetic_inputs: MemberInputs) -> None:
    small = {"spacing_mm": 4.0, "shape": (16, 16, 16)}
    ours = StoicDeakin.demo(0, growth_rate=4, block_config=(1, 1), **small).preprocess(synthetic_inputs)
    theirs = StoicBaseline.demo(0, **small, **SMALL_I3D).preprocess(synthetic_inputs)
    assert torch.equal(ours.tensors["image"], theirs.tensors["image"])


def test_code1055_matches_its_authors_transposed_cubic_zoom_and_flip(synthetic_inputs: MemberInputs) -> None:
    member = StoicCode1055.demo(0, shape=(16, 16, 16), **SMALL_CONVNEXT)
    image = member.preprocess(synthetic_inputs).tensors["image"][0].numpy()
    # C1055: GetArrayFromImage(...).T, Zoom (cubic), Scale01(-1000, 500), Clip(0, 1), Normalize3D,
    # NumpyNegativeStrideCorrection (flip axis 0), in that order.
    xyz = synthetic_inputs.volume.hu.T
    zoomed = ndimage.zoom(xyz, [16 / n for n in xyz.shape])
    scaled = np.clip((np.clip(zoomed, -1000, 500) + 1000) / 1500, 0, 1)
    expected = np.flip((scaled - 0.3110) / 0.3154, axis=0)
    assert np.allclose(image, expected, atol=1e-4)
    profile_x = image.mean(axis=(1, 2))
    profile_z = image.mean(axis=(0, 1))
    assert np.all(np.diff(profile_x) < 0)  # HU rises with x; the first axis is x, reversed
    assert np.all(np.diff(profile_z[2:-2]) > 0)  # and the last axis is z (10 HU per slice)


def test_code1055_reverses_x_after_the_zoom_as_its_authors_did() -> None:
    """512 columns zoomed to 224 (a real scan's x): scipy's zoom maps the last output plane just
    beyond the input, so reversing x before the zoom would change planes 0 and 223; after it, the
    input is exactly the authors' (values checked to float32 precision, noise input)."""
    rng = np.random.default_rng(55)
    hu = rng.uniform(-1000.0, 500.0, size=(3, 4, 512)).astype(np.float32)
    geometry = Geometry(origin=(0.0, 0.0, 0.0), spacing=(5.0, 0.7, 0.7), direction=np.eye(3).tolist(), shape=hu.shape)
    volume = Volume(hu=hu, geometry=geometry, source_sop_instance_uids=("",) * 3)
    lungs = np.ones(hu.shape, dtype=bool)
    inputs = MemberInputs(volume, lungs, lungs, np.zeros_like(lungs), None, 60.0, "M")
    shape = (224, 4, 3)
    image = code1055_input(Code1055Config(), inputs, shape=shape).tensors["image"][0].numpy()

    def normalised(zoomed: np.ndarray) -> np.ndarray:
        return (np.clip((np.clip(zoomed, -1000, 500) + 1000) / 1500, 0, 1) - 0.3110) / 0.3154

    factors = [n / m for n, m in zip(shape, hu.T.shape, strict=True)]
    authors = np.flip(normalised(ndimage.zoom(hu.T, factors)), axis=0)
    reversed_first = normalised(ndimage.zoom(np.ascontiguousarray(hu.T[::-1]), factors))
    assert np.allclose(image, authors, atol=1e-5)
    differs = np.abs(reversed_first - authors).max(axis=(1, 2)) > 0.1
    assert differs.nonzero()[0].tolist() == [0, 223]


def test_flyingbird_crops_the_lung_box_plus_6_mm_and_drops_small_objects(synthetic_inputs: MemberInputs) -> None:
    member = StoicFlyingBird.demo(0, shape=(16, 16, 16), **SMALL_RESNET)
    prepared = member.preprocess(synthetic_inputs)
    assert prepared.record["lung_box"] == LUNG_BOX
    assert prepared.record["margin_voxels"] == (2, 3, 3)  # round(6 / 2.5), round(6 / 2)
    crop = ((8, 31), (13, 50), (5, 58))
    assert prepared.record["crop_box"] == crop
    image = prepared.tensors["image"][0].numpy()
    corners = [(crop[0][a], crop[1][b], crop[2][c]) for a in (0, 1) for b in (0, 1) for c in (0, 1)]
    hu = synthetic_inputs.volume.hu
    expected = [(np.clip(hu[c], -1024, 512) + 236.88525) / 404.0286 for c in corners]
    found = [image[a, b, c] for a in (0, -1) for b in (0, -1) for c in (0, -1)]
    assert np.allclose(found, expected, atol=1e-4)  # linear zoom maps corners onto corners

    speck = synthetic_inputs.lungs | box_mask(SYNTHETIC_SHAPE, ((36, 37), (0, 4), (60, 64)))  # 2 x 5 x 4 = 40 voxels
    blob = synthetic_inputs.lungs | box_mask(SYNTHETIC_SHAPE, ((35, 38), (0, 4), (59, 63)))  # 4 x 5 x 5 = 100 voxels
    assert member.preprocess(dataclasses.replace(synthetic_inputs, lungs=speck)).record["lung_box"] == LUNG_BOX
    grown = member.preprocess(dataclasses.replace(synthetic_inputs, lungs=blob)).record["lung_box"]
    assert grown == ((10, 38), (0, 47), (8, 63))


def test_flyingbird_uses_the_whole_scan_without_lungs_and_the_85_bin_without_age(
    synthetic_inputs: MemberInputs,
) -> None:
    member = StoicFlyingBird.demo(0, shape=(16, 16, 16), **SMALL_RESNET)
    no_lungs = dataclasses.replace(synthetic_inputs, lungs=np.zeros(SYNTHETIC_SHAPE, dtype=bool), age_years=None)
    prepared = member.preprocess(no_lungs)
    assert prepared.record["crop_box"] == ((0, 39), (0, 63), (0, 63))
    assert float(prepared.tensors["age"]) == 1.0
    assert any("whole scan" in n for n in prepared.notes) and any("age unknown" in n for n in prepared.notes)
    assert float(member.preprocess(synthetic_inputs).tensors["age"]) == pytest.approx(0.6)  # 67 -> bin 65


def test_uaux2_severity_input_is_grey_scaled_padded_rgb_imagenet(synthetic_inputs: MemberInputs) -> None:
    member = StoicUaux2.demo(
        0, spacing_mm=(5.0, 4.0, 4.0), severity_shape=(24, 40, 24), covid_shape=(8, 8, 8), **SMALL_UAUX2
    )
    prepared = member.preprocess(synthetic_inputs)
    assert prepared.record["resampled_shape"] == (20, 32, 32)
    assert prepared.record["severity_crop_start"] == (-2, -4, 4)  # pad 2 + 2 slices, 4 + 4 rows; crop x centred
    image = prepared.tensors["image"].numpy()
    grey = np.stack([(image[c] * IMAGENET_SD[c] + IMAGENET_MEAN[c]) * 255.0 for c in range(3)])
    assert np.allclose(grey, np.round(grey), atol=1e-3) and np.allclose(grey[0], grey[2], atol=1e-3)
    assert grey.min() == pytest.approx(0.0, abs=1e-3) and grey.max() == pytest.approx(255.0, abs=1e-3)
    assert np.allclose(grey[:, :2], 0.0, atol=1e-3)  # padding with 0 on the grey scale


def test_uaux2_covid_input_is_the_lung_only_crop_in_tf_scaling(synthetic_inputs: MemberInputs) -> None:
    member = StoicUaux2.demo(
        0, spacing_mm=(5.0, 4.0, 4.0), severity_shape=(8, 8, 8), covid_shape=(12, 12, 16), **SMALL_UAUX2
    )
    prepared = member.preprocess(synthetic_inputs)
    volume = synthetic_inputs.volume
    lungs, _ = resample_like_simpleitk(synthetic_inputs.lungs.astype(np.float32), volume.geometry, (5.0, 4.0, 4.0))
    box = bounding_box(lungs >= 0.5)
    assert box is not None
    assert prepared.record["lung_crop"] == box  # (first, last) used as first:last, as UX lungseg/apply.py
    covid = prepared.tensors["covid_image"].numpy()
    assert covid.shape == (3, 12, 12, 16)
    assert covid.min() == pytest.approx(-1.0) and covid.max() <= 1.0  # x / 127.5 - 1 of the grey scale
    assert np.array_equal(covid[0], covid[1])


def test_uaux2_metadata_and_its_missing_values(synthetic_inputs: MemberInputs) -> None:
    member = StoicUaux2.demo(
        0, spacing_mm=(8.0, 8.0, 8.0), severity_shape=(8, 8, 8), covid_shape=(8, 8, 8), **SMALL_UAUX2
    )
    lung_voxels = 20 * 32 * 48
    assert synthetic_inputs.lesions is not None
    assert infection_lung_ratio(synthetic_inputs.lesions, synthetic_inputs.lungs) == pytest.approx(32 / lung_voxels)
    metadata = member.preprocess(synthetic_inputs).tensors["metadata"]
    assert metadata.tolist() == pytest.approx([0.6, 0.0, 32 / lung_voxels])
    male = member.preprocess(dataclasses.replace(synthetic_inputs, sex=None, age_years=86.0)).tensors["metadata"]
    assert male[:2].tolist() == [1.0, 1.0]  # unknown sex is "not F"; 86 years -> bin 85 -> 1
    no_age = member.preprocess(dataclasses.replace(synthetic_inputs, age_years=None))
    assert "metadata" not in no_age.tensors and any("no P(severe)" in n for n in no_age.notes)
    with pytest.raises(MemberUnavailable, match="needs a lesion mask"):
        member.preprocess(dataclasses.replace(synthetic_inputs, lesions=None))


# ---------------------------------------------------------------------------------------------
# The real 64-slice chest CT, full-size inputs


def test_real_series_baseline_input(real_inputs: MemberInputs) -> None:
    prepared = StoicBaseline.demo(0, **SMALL_I3D).preprocess(real_inputs)
    image = prepared.tensors["image"]
    assert tuple(image.shape) == (1, 240, 240, 240)
    assert prepared.record["resampled_shape"] == (200, 269, 269)  # 64 x 5 / 1.6; 512 x 0.842 / 1.6
    assert prepared.record["crop_start"] == (-40, 14, 14)
    assert torch.allclose(image[0, :40], torch.tensor(PAD_AFTER_SCALING))
    # The scan's darkest value (-1024 HU outside the reconstruction circle) lies inside the [-1100, 300]
    # window, so the input's minimum is that value scaled, not 0.
    darkest = max(float(real_inputs.volume.hu.min()), -1100.0)
    assert darkest > -1100.0 and float(image.min()) == pytest.approx((darkest + 1100.0) / 1400.0, abs=1e-6)
    assert float(image.max()) <= 1.0


def test_real_series_code1055_input(real_inputs: MemberInputs) -> None:
    image = StoicCode1055.demo(0, **SMALL_CONVNEXT).preprocess(real_inputs).tensors["image"]
    assert tuple(image.shape) == (1, 224, 224, 224)
    low, high = (0.0 - 0.3110) / 0.3154, (1.0 - 0.3110) / 0.3154
    assert float(image.min()) == pytest.approx(low, abs=1e-5) and float(image.max()) <= high + 1e-5


def test_real_series_flyingbird_input(real_inputs: MemberInputs) -> None:
    prepared = StoicFlyingBird.demo(0, **SMALL_RESNET).preprocess(real_inputs)
    assert tuple(prepared.tensors["image"].shape) == (1, 256, 256, 256)
    assert prepared.record["margin_voxels"] == (1, 7, 7)  # round(6 / 5), round(6 / 0.842)
    box, crop = prepared.record["lung_box"], prepared.record["crop_box"]
    for (lo, hi), (c_lo, c_hi), margin, n in zip(box, crop, (1, 7, 7), real_inputs.volume.hu.shape, strict=True):
        assert c_lo == max(0, lo - margin) and c_hi == min(n - 1, hi + margin)
    assert float(prepared.tensors["age"]) == pytest.approx(0.4)  # 58 years -> bin 55


def test_real_series_uaux2_inputs(real_inputs: MemberInputs) -> None:
    inputs = dataclasses.replace(real_inputs, lesions=np.zeros_like(real_inputs.lungs))
    prepared = StoicUaux2.demo(0, **SMALL_UAUX2).preprocess(inputs)
    assert tuple(prepared.tensors["image"].shape) == (3, 148, 224, 224)
    assert tuple(prepared.tensors["covid_image"].shape) == (3, 148, 180, 224)
    assert prepared.record["resampled_shape"] == (152, 291, 291)  # 64 x 5 / 2.1; 512 x 0.842 / 1.48
    assert prepared.record["severity_crop_start"] == (2, 33, 33)
    assert prepared.tensors["metadata"].tolist() == pytest.approx([0.4, 1.0, 0.0])
