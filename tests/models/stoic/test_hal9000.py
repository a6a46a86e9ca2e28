"""hal9000: slice sampling, intensities, the nine test-time views, top-5 pooling, outputs, weights files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models.stoic.hal9000 import (
    Hal9000Member,
    HalConfig,
    SliceTopKNet,
    ToNormalisedTensord,
    WindowMinMaxUint8d,
    equidistant_slices,
    safe_rotate,
    tta_views,
)
from models.stoic.member import MemberInputs, MemberUnavailable

TINY = {"mobilenets": 1, "resnets": 1, "mobilenet_width_mult": 0.25, "resnet_widths": (8, 16, 32, 64)}
#: Narrow networks on 64 x 64 slices with 56 and 42 crops: the views and averaging of the real member, faster.
SMALL = {**TINY, "resize": 64, "crop": 56, "corner_crop": 42}


@pytest.fixture(scope="module")
def tiny() -> Hal9000Member:
    """One narrow MobileNetV3-Large and one narrow ResNet-18, real input sizes and views."""
    return Hal9000Member.demo(0, **TINY)


@pytest.fixture(scope="module")
def small() -> Hal9000Member:
    """:data:`SMALL`, for the tests that run the networks."""
    return Hal9000Member.demo(0, **SMALL)


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (64, list(range(32))),  # step 64 // 33 = 1: the first half of the series
        (330, list(range(0, 320, 10))),  # step 10, the first 32 of 33 sampled slices
        (100, list(range(0, 96, 3))),  # step 3: 34 sampled, 32 kept
        (20, list(range(20))),  # step 0 in the authors' code; every slice here
    ],
)
def test_slices_are_every_n_over_33th_from_the_first_and_32_are_kept(count: int, expected: list[int]) -> None:
    assert equidistant_slices(count).tolist() == expected


def test_window_is_level_minus_600_width_1500_then_stack_min_max_truncated_to_uint8() -> None:
    hu = np.asarray([[[-2000.0, -1350.0, -600.0, 150.0, 500.0]], [[-1000.0, -1000.0, -1000.0, -1000.0, 0.0]]])
    out = WindowMinMaxUint8d(["image"], (-1350.0, 150.0))({"image": hu})["image"]
    assert out.dtype == np.uint8
    # Over the whole stack: (-600 + 1350) / 1500 * 255 = 127.5 -> 127; -1000 -> 59.5 -> 59; 0 -> 229.5 -> 229.
    assert out.tolist() == [[[0, 0, 127, 255, 255]], [[59, 59, 59, 59, 229]]]
    with pytest.raises(MemberUnavailable, match="uniform"):
        WindowMinMaxUint8d(["image"], (-1350.0, 150.0))({"image": np.full((2, 3, 3), 400.0)})
    normalised = ToNormalisedTensord(["image"])({"image": out})["image"]
    assert normalised.shape == (2, 3, 1, 5) and normalised[0, :, 0, 0].tolist() == [-1.0] * 3
    assert normalised[0, 0, 0, 3] == 1.0


def test_synthetic_series_gives_every_slice_resized_to_256_and_a_note(
    tiny: Hal9000Member, synthetic_inputs: MemberInputs
) -> None:
    prepared = tiny.preprocess(synthetic_inputs)
    assert tuple(prepared.slices.shape) == (24, 3, 256, 256)
    assert prepared.record["slices"] == tuple(range(24))
    # Min-max to [0, 255] then bilinear upsampling (which never lands on a source pixel centre).
    assert -1.0 <= float(prepared.slices.min()) < -0.9 and 0.9 < float(prepared.slices.max()) <= 1.0
    assert torch.equal(prepared.slices[:, 0], prepared.slices[:, 2])
    assert any("every slice used" in note for note in prepared.notes)


def test_real_series_gives_the_first_32_slices(tiny: Hal9000Member, real_inputs: MemberInputs) -> None:
    prepared = tiny.preprocess(real_inputs)
    count = real_inputs.volume.hu.shape[0]
    step = max(count // 33, 1)
    assert prepared.record["slices"] == tuple(range(0, 32 * step, step))
    assert tuple(prepared.slices.shape) == (32, 3, 256, 256) and not prepared.notes


def test_nine_views_are_the_slices_four_corner_crops_the_centre_and_three_rotations() -> None:
    rows, columns = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    slices = (rows * 1000 + columns)[None, None].expand(2, 3, -1, -1)
    views = dict(tta_views(slices, HalConfig()))
    assert list(views) == [
        "original",
        "crop_r0_c0",
        "crop_r58_c58",
        "crop_r0_c58",
        "crop_r58_c0",
        "centre",
        "rotate_-5",
        "rotate_-10",
        "rotate_+5",
    ]
    assert torch.equal(views["original"], slices)
    assert torch.equal(views["centre"], slices[..., 16:240, 16:240])
    for name in ("crop_r0_c0", "crop_r58_c58", "crop_r0_c58", "crop_r58_c0"):
        row, column = (int(part[1:]) for part in name.split("_")[1:])
        view = views[name]
        assert tuple(view.shape) == (2, 3, 224, 224)
        # A 166 crop stretched to 224: the first output pixel samples the crop's first pixel.
        assert view[0, 0, 0, 0] == slices[0, 0, row, column]
        assert float(view[0, 0, -1, -1]) == pytest.approx(float(slices[0, 0, row + 165, column + 165]), abs=0.1)
    for angle in (-5, -10, 5):
        rotated = views[f"rotate_{angle:+d}"]
        assert tuple(rotated.shape) == (2, 3, 224, 224)
        assert rotated[0, 0, 0, 0] == 0.0  # the enlarged canvas's zero border reaches the corners


def test_safe_rotate_turns_counter_clockwise_about_w_over_2_as_opencv() -> None:
    image = torch.arange(36.0).reshape(1, 1, 6, 6)
    assert torch.allclose(safe_rotate(image, 0.0), image, atol=1e-4)
    # getRotationMatrix2D((3, 3), 90): destination (x, y) reads source (6 - y, x), so row 0 is
    # outside the image (0) and the rest is numpy's counter-clockwise rot90 moved down one row.
    rotated = safe_rotate(image, 90.0)[0, 0]
    assert torch.allclose(rotated[0], torch.zeros(6), atol=1e-4)
    assert torch.allclose(rotated[1:], torch.rot90(image[0, 0], 1, dims=(0, 1))[:-1], atol=1e-4)
    # 5 degrees on 224: canvas int(224 cos 5 + 224 sin 5) = 242 wide, shrunk back to 224.
    square = torch.ones(1, 1, 224, 224)
    shrunk = safe_rotate(square, 5.0)
    assert shrunk[0, 0, 112, 0] < 1.0 and shrunk[0, 0, 112, 112] == pytest.approx(1.0)
    assert float(shrunk[0, 0, 112].gt(0.999).sum()) == pytest.approx(224 * 224 / 242, abs=2)


class _MeanPool(nn.Module):
    """A stand-in backbone: per-channel means of each slice (3 features)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


def test_top5_pooling_averages_each_features_five_largest_slice_values() -> None:
    network = SliceTopKNet(_MeanPool(), 3, 2, top_k=5)
    features = torch.tensor([[[float(i), float(-i), float(i % 3)] for i in range(8)]])
    assert network.pool(features).tolist() == [[5.0, -2.0, pytest.approx(1.4)]]  # 3..7 ; -0..-4 ; 2,2,1,1,1
    with torch.no_grad():
        network.classifier.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 1.0]]))
        network.classifier.bias.copy_(torch.tensor([0.5, -1.0]))
    stacks = torch.arange(8.0)[None, :, None, None, None].expand(1, 8, 3, 4, 4)
    # Every feature is the slice index: top 5 of 0..7 = 5.
    assert network(stacks).tolist() == [[5.5, 14.0]]
    with pytest.raises(ValueError, match="slice stacks"):
        network(stacks[:, :4])


def test_outputs_average_sigmoids_over_views_and_networks_index_1_covid_index_0_severe(
    small: Hal9000Member, synthetic_inputs: MemberInputs
) -> None:
    prepared = small.preprocess(synthetic_inputs)
    views = [view for _, view in tta_views(prepared.slices, small.config)]
    per_network = []
    with torch.no_grad():
        for network in small.networks:
            logits = torch.stack([network(view[None])[0] for view in views]).double()
            per_network.append((1.0 / (1.0 + torch.exp(-logits))).mean(0))
    mean = torch.stack(per_network).mean(0)
    output = small.predict(synthetic_inputs)
    assert output.details["views"] == 9.0 and output.details["slices"] == 24.0
    assert output.p_covid == pytest.approx(float(mean[1]), abs=1e-6)
    assert output.p_severe == pytest.approx(float(mean[0]), abs=1e-6)
    assert output.details["resnet18_p_covid"] == pytest.approx(float(per_network[1][1]), abs=1e-6)
    assert output.p_covid == pytest.approx(
        (output.details["resnet18_p_covid"] + output.details["mobilenet_v3_large_p_covid"]) / 2
    )
    assert any("demonstration" in note for note in output.notes)


def test_too_few_slices_make_the_member_unavailable(tiny: Hal9000Member, synthetic_inputs: MemberInputs) -> None:
    volume = synthetic_inputs.volume
    short = replace(
        volume,
        hu=volume.hu[:4],
        geometry=replace(volume.geometry, shape=(4, 64, 64)),
        source_sop_instance_uids=volume.source_sop_instance_uids[:4],
    )
    with pytest.raises(MemberUnavailable, match="top 5"):
        tiny.predict(replace(synthetic_inputs, volume=short))


def test_demo_weights_round_trip_through_safetensors(
    small: Hal9000Member, synthetic_inputs: MemberInputs, tmp_path: Path
) -> None:
    assert small.card["demo"] is True and small.card["member"] == "stoic_hal9000"
    loaded = Hal9000Member.from_safetensors(small.save(tmp_path / "hal9000.safetensors"))
    assert loaded.card == small.card and loaded.config == small.config
    assert loaded.predict(synthetic_inputs) == small.predict(synthetic_inputs)
    assert Hal9000Member.demo(1, **SMALL).predict(synthetic_inputs) != small.predict(synthetic_inputs)
    with pytest.raises(ValueError, match="networks"):
        Hal9000Member(small.networks[:1], small.config, small.card)
