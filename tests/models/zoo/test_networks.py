"""Shapes, argument validation and behaviour of the zoo's networks on small CPU inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.zoo import DenseNet, InceptionV1, ResNet, SliceMaxNet, build, build_features, names
from models.zoo._layers import same_padding

SMALL = (3, 8, 32, 32)


@pytest.mark.parametrize("name", names())
def test_every_network_maps_a_volume_batch_to_logits(name: str) -> None:
    torch.manual_seed(0)
    model = build(name, num_outputs=2).eval()
    with torch.no_grad():
        out = model(torch.rand(1, *SMALL))
    assert out.shape == (1, 2)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("name", "features"),
    [("densenet121_3d", 1024), ("densenet201_3d", 1920), ("inception_v1_3d", 1024), ("resnet50_3d", 2048)],
)
def test_backbones_return_pooled_features(name: str, features: int) -> None:
    model = build_features(name).eval()
    with torch.no_grad():
        assert model(torch.rand(1, *SMALL)).shape == (1, features)


def test_2d_variants_take_the_max_over_slices() -> None:
    torch.manual_seed(0)
    model = build("resnet18_2d", num_outputs=3).eval()
    assert isinstance(model, SliceMaxNet)
    volume = torch.rand(1, *SMALL)
    shuffled = volume[:, :, torch.randperm(SMALL[1])]
    with torch.no_grad():
        per_slice = model.slice_features(volume)
        assert per_slice.shape == (1, SMALL[1], 512)
        expected = model.fc(per_slice.amax(dim=1))
        assert torch.allclose(model(volume), expected)
        # The slice-wise maximum does not depend on slice order; a 3D network does.
        assert torch.allclose(model(shuffled), model(volume), atol=1e-6)


def test_3d_densenet_keeps_depth_in_the_stem_and_halves_it_in_transitions() -> None:
    model = build_features("densenet121_3d").eval()
    assert isinstance(model, DenseNet)
    with torch.no_grad():
        stem = model.features[:4](torch.rand(1, 3, 16, 64, 64))
        final = model.feature_map(torch.rand(1, 3, 16, 64, 64))
    assert stem.shape[2:] == (16, 16, 16)  # 1x7x7 stride (1, 2, 2), pool (1, 3, 3) stride (1, 2, 2)
    assert final.shape[2:] == (2, 2, 2)  # three 2x2x2 transitions


def test_same_padding_gives_ceil_sizes_with_the_extra_pixel_at_the_end() -> None:
    assert same_padding((15, 16), (3, 3), (2, 2)) == [0, 1, 1, 1]  # last axis first
    model = build_features("inception_v1_3d").eval()
    assert isinstance(model, InceptionV1)
    with torch.no_grad():
        # Depth strides 2 * 2 * 2 (stem, two pools), in-plane 32: ceil(17 / 8), ceil(33 / 32), ceil(35 / 32).
        assert model.feature_map(torch.rand(1, 3, 17, 33, 35)).shape[2:] == (3, 2, 2)


def test_gradient_checkpointing_changes_memory_not_results() -> None:
    x = torch.rand(2, 3, 8, 32, 32)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = build(
            "densenet121_3d", num_outputs=1, growth_rate=8, block_config=(2, 2), gradient_checkpointing=checkpointing
        )
        model.train()
        model(x).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: DenseNet(1, 3, 5),
        lambda: DenseNet(3, 0, 5),
        lambda: DenseNet(3, 3, 5, block_config=()),
        lambda: ResNet(3, 3, 5, block="basic", layers=(2, 2, 2)),
        lambda: ResNet(3, 3, 5, block="dense", layers=(2, 2, 2, 2)),  # type: ignore[arg-type]
        lambda: InceptionV1(3, 3, 0),
        lambda: InceptionV1(2, 3, 5, dropout=1.0),
        lambda: SliceMaxNet(nn.Identity(), 0, 5),
    ],
)
def test_invalid_arguments_raise(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]
