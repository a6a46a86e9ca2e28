"""simon.j: preprocessing geometry, age/sex encoding, slice features, regressions and blend, weights files."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from models.stoic.hal9000 import Hal9000Member
from models.stoic.member import MemberInputs, MemberUnavailable
from models.stoic.simonj import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CleanLungMaskd,
    CropLungSlicesd,
    CropPadAroundLungsd,
    LogisticHead,
    SimonjHeads,
    SimonjMember,
    age_sex_features,
    imagenet_normalise,
    slice_features,
)
from models.stoic.vit import VisionTransformer

TINY = {"embed_dim": 16, "depth": 2, "lung_depth": 1, "num_heads": 2}


@pytest.fixture(scope="module")
def tiny() -> SimonjMember:
    """simon.j with 16-wide ViTs of 2 and 1 blocks (the real patch size and input size)."""
    return SimonjMember.demo(0, **TINY)


def _lung_slices(inputs: MemberInputs) -> tuple[int, int]:
    """SJ CropLungs on the 5 mm grid: first lung slice to the last (exclusive), 10 % off each end."""
    present = np.flatnonzero(inputs.lungs.any(axis=(1, 2)))
    start, end = int(present[0]), int(present[-1])
    n = end - start
    return start + int(0.1 * n), start + int(0.9 * n)


@pytest.mark.parametrize(
    ("age", "sex", "expected_age", "expected_sex", "notes"),
    [
        (58.0, "M", 0.55, 1.0, 0),  # STOIC bin 55
        (None, "F", 0.65, 0.0, 1),  # "median of the STOIC dataset"
        (20.0, None, 0.35, 0.5, 1),  # bin 35; unknown sex 0.5
        (101.0, "O", 0.85, 0.5, 1),  # bin 85; other sex 0.5
        (float("nan"), "m", 0.65, 1.0, 1),
    ],
)
def test_age_and_sex_are_encoded_as_parse_age_sex_did(
    age: float | None, sex: str | None, expected_age: float, expected_sex: float, notes: int
) -> None:
    encoded_age, encoded_sex, said = age_sex_features(age, sex)
    assert encoded_age == pytest.approx(expected_age) and encoded_sex == expected_sex
    assert len(said) == notes


def test_synthetic_geometry_is_1_5_x_1_5_x_5_mm_padded_to_224_and_cropped_to_the_lungs(
    tiny: SimonjMember, synthetic_inputs: MemberInputs
) -> None:
    prepared = tiny.preprocess(synthetic_inputs)
    # 64 columns and rows of 3 mm -> int(64 * 3 / 1.5) = 128; 24 slices of 5 mm stay 24.
    assert prepared.record["resampled_shape"] == (24, 128, 128)
    assert prepared.record["padding"] == ((48, 48), (48, 48))  # (224 - 128) // 2 of -1024 HU each side
    first, last = _lung_slices(synthetic_inputs)
    assert prepared.record["kept_slices"] == (first, last)
    assert tuple(prepared.full.shape) == tuple(prepared.lung.shape) == (last - first, 3, 224, 224)
    padding = ((0.0 - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)).astype(np.float32)
    assert torch.allclose(prepared.full[:, :, :48, :], torch.from_numpy(padding)[None, :, None, None])
    # Lung image: the CT inside the lungs, -1024 HU (0 after windowing) outside.
    outside = torch.isclose(prepared.lung, torch.from_numpy(padding)[None, :, None, None])
    assert outside[:, :, 112, :20].all() and not outside[:, :, 40:88, 40:88].all()
    same = torch.isclose(prepared.lung, prepared.full)
    assert (same | outside).all()
    assert prepared.age == pytest.approx(0.55) and prepared.sex == 1.0


def test_imagenet_normalisation_windows_minus_1024_to_600_hu() -> None:
    normalised = imagenet_normalise(np.asarray([[[-2000.0, -1024.0, -212.0, 600.0, 3000.0]]]))
    expected = (np.asarray([0.0, 0.0, 0.5, 1.0, 1.0])[None, :] - np.asarray(IMAGENET_MEAN)[:, None]) / np.asarray(
        IMAGENET_STD
    )[:, None]
    assert normalised.shape == (1, 3, 1, 5)
    assert np.allclose(normalised[0, :, 0].numpy(), expected, atol=1e-6)


def test_crop_centres_on_the_lungs_and_clips_at_the_border() -> None:
    image = np.arange(2 * 300 * 250, dtype=np.float32).reshape(2, 300, 250)
    mask = np.zeros(image.shape, dtype=bool)
    mask[:, 10:61, 200:241] = True  # rows 10-60: centre 35 -> 112; columns 200-240: centre 220 -> 138
    out = CropPadAroundLungsd(["image", "mask"], "mask", 224, {"image": -1024.0, "mask": False})(
        {"image": image, "mask": mask}
    )
    assert out["record"]["crop_starts"] == (0, 26)
    assert np.array_equal(out["image"], image[:, 0:224, 26:250])
    assert out["mask"].sum() == mask.sum()


def test_clean_mask_keeps_each_lungs_largest_component_and_drops_dense_slices() -> None:
    image = np.full((3, 20, 20), -850.0)
    right = np.zeros(image.shape, dtype=bool)
    right[:, 2:8, 2:8] = True
    right[:, 15:17, 15:17] = True  # a smaller separate component: dropped
    left = np.zeros(image.shape, dtype=bool)
    left[:, 2:8, 11:14] = True
    image[1, 2:8, 11:14] = 20.0  # soft tissue inside the left lung on slice 1: component removed there
    out = CleanLungMaskd("image", ("lung_right", "lung_left"), "mask", -100.0, 5.0)(
        {"image": image, "lung_right": right, "lung_left": left}
    )
    expected = np.zeros(image.shape, dtype=bool)
    expected[:, 2:8, 2:8] = True
    expected[[0, 2], 2:8, 11:14] = True
    assert np.array_equal(out["mask"], expected)
    assert out["record"]["removed_dense_components"] == 1


def test_lung_slice_crop_excludes_the_last_lung_slice_and_ten_percent_per_end() -> None:
    mask = np.zeros((40, 4, 4), dtype=bool)
    mask[5:26] = True  # lung slices 5-25: start 5, end 25, n = 20 -> 7 .. 23
    out = CropLungSlicesd(["mask"], "mask", 0.1)({"mask": mask})
    assert out["record"]["kept_slices"] == (7, 23) and out["mask"].shape[0] == 16
    with pytest.raises(MemberUnavailable, match="lung slice"):
        CropLungSlicesd(["mask"], "mask", 0.1)({"mask": mask[:6]})


def test_empty_lung_mask_makes_the_member_unavailable(tiny: SimonjMember, synthetic_inputs: MemberInputs) -> None:
    empty = np.zeros_like(synthetic_inputs.lungs)
    inputs = MemberInputs(synthetic_inputs.volume, empty, empty, empty)
    with pytest.raises(MemberUnavailable, match="lung mask is empty"):
        tiny.predict(inputs)


def test_real_series_geometry(tiny: SimonjMember, real_inputs: MemberInputs) -> None:
    prepared = tiny.preprocess(real_inputs)
    geometry = real_inputs.volume.geometry
    expected = tuple(int(n * s / t) for n, s, t in zip(geometry.shape, geometry.spacing, (5.0, 1.5, 1.5), strict=True))
    assert prepared.record["resampled_shape"] == expected
    first, last = prepared.record["kept_slices"]
    lung_first, lung_end = prepared.record["lung_slices"]
    n = lung_end - lung_first
    assert (first, last) == (lung_first + int(0.1 * n), lung_first + int(0.9 * n))
    assert tuple(prepared.full.shape) == (last - first, 3, 224, 224) and last - first >= 10
    assert torch.isfinite(prepared.full).all() and torch.isfinite(prepared.lung).all()


def test_slice_features_average_cls_tokens_over_slices_and_vertical_flips() -> None:
    torch.manual_seed(0)
    network = VisionTransformer(image_size=32, patch_size=16, embed_dim=8, depth=1, num_heads=2).eval()
    slices = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        expected = (network(slices).double().mean(0) + network(torch.flip(slices, dims=(2,))).double().mean(0)) / 2
    features = slice_features(network, slices, batch_size=2)
    assert np.allclose(features, expected.numpy(), atol=1e-6)
    assert np.allclose(slice_features(network, torch.flip(slices, dims=(2,)), 5), features, atol=1e-6)
    assert np.allclose(slice_features(network, slices[[4, 2, 0, 1, 3]], 3), features, atol=1e-6)
    assert not np.allclose(slice_features(network, torch.flip(slices, dims=(3,)), 5), features, atol=1e-4)


def test_predict_blends_two_logistic_regressions_per_output_with_age_and_sex_for_severity(
    tiny: SimonjMember, synthetic_inputs: MemberInputs
) -> None:
    rng = np.random.default_rng(1)
    d = 16
    heads = {(k, o): LogisticHead(rng.normal(0, 1, d + (2 if o == "severe" else 0)), 0.3) for k in ("full", "lung")
             for o in ("covid", "severe")}  # fmt: skip
    member = SimonjMember(tiny.full, tiny.lung, SimonjHeads(heads, {"covid": 0.25, "severe": 0.8}), tiny.card)
    x_full, x_lung = member.features(member.preprocess(synthetic_inputs))

    def sigmoid(v: float) -> float:
        return 1.0 / (1.0 + math.exp(-v))

    age_sex = np.asarray([0.55, 1.0])
    p_covid = 0.25 * sigmoid(x_full @ heads["full", "covid"].coef + 0.3) + 0.75 * sigmoid(
        x_lung @ heads["lung", "covid"].coef + 0.3
    )
    p_severe = 0.8 * sigmoid(np.concatenate([x_full, age_sex]) @ heads["full", "severe"].coef + 0.3) + 0.2 * sigmoid(
        np.concatenate([x_lung, age_sex]) @ heads["lung", "severe"].coef + 0.3
    )
    output = member.predict(synthetic_inputs)
    assert output.p_covid == pytest.approx(p_covid) and output.p_severe == pytest.approx(p_severe)
    assert output.details["alpha_severe"] == 0.8
    female = member.predict(replace(synthetic_inputs, sex="F"))
    assert female.p_covid == pytest.approx(output.p_covid) and female.p_severe != pytest.approx(output.p_severe)
    assert any("demonstration" in note for note in output.notes)


def test_heads_refuse_missing_regressions_and_blends_outside_0_1() -> None:
    head = LogisticHead(np.zeros(3), 0.0)
    complete = {(k, o): head for k in ("full", "lung") for o in ("covid", "severe")}
    with pytest.raises(ValueError, match="missing"):
        SimonjHeads({("full", "covid"): head}, {"covid": 0.5, "severe": 0.5})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SimonjHeads(complete, {"covid": 1.5, "severe": 0.5})
    with pytest.raises(ValueError, match="coefficients"):
        head.probability(np.zeros(4))


def test_demo_weights_round_trip_through_safetensors(
    tiny: SimonjMember, synthetic_inputs: MemberInputs, tmp_path: Path
) -> None:
    assert tiny.card["demo"] is True and tiny.card["member"] == "stoic_simonj"
    path = tiny.save(tmp_path / "simonj.safetensors")
    loaded = SimonjMember.from_safetensors(path)
    assert loaded.card == tiny.card
    assert loaded.predict(synthetic_inputs) == tiny.predict(synthetic_inputs)
    assert SimonjMember.demo(0, **TINY).predict(synthetic_inputs) == tiny.predict(synthetic_inputs)
    assert SimonjMember.demo(1, **TINY).predict(synthetic_inputs) != tiny.predict(synthetic_inputs)
    other = Hal9000Member.demo(0, mobilenets=1, resnets=0, mobilenet_width_mult=0.25)
    with pytest.raises(ValueError, match="stoic_hal9000"):
        SimonjMember.from_safetensors(other.save(tmp_path / "hal.safetensors"))
