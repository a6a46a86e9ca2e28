"""Inflation of 2D weights into the 3D networks (thesis 3.3.3, "Pre-training").

A volume made of one slice repeated along depth must give, at depth positions unaffected by
the depth borders, exactly the 2D network's feature map of that slice.  Random 2D weights with
random BatchNorm statistics make a wrong copy or a wrong inflation factor visible.

* DenseNet replicates the border slices in its depth padding (hassony2's inflated DenseNet), so
  every depth position reproduces the 2D features and the check covers the whole map.
* ResNet and I3D pad depth with zeros (their references do), so only positions whose receptive
  field lies inside the volume reproduce them: the volume is made deep enough and the central
  position is compared; the border position is checked to differ, which shows that the test
  sees the padding at all.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.zoo import (
    DenseNet,
    InceptionV1,
    ResNet,
    SliceMaxNet,
    build,
    build_features,
    inflate_into,
    inflate_state_dict,
)


def _randomise_batchnorm(model: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                assert module.running_mean is not None and module.running_var is not None
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)


def _pair(family: str) -> tuple[DenseNet | ResNet | InceptionV1, DenseNet | ResNet | InceptionV1]:
    """A random 2D backbone (random BN statistics) and the 3D backbone inflated from it."""
    torch.manual_seed(1)
    model_2d = build(f"{family}_2d").eval()
    assert isinstance(model_2d, SliceMaxNet)
    _randomise_batchnorm(model_2d, 2)
    torch.manual_seed(3)
    model_3d = build_features(f"{family}_3d").eval()
    assert isinstance(model_3d, DenseNet | ResNet | InceptionV1)
    report = inflate_into(model_3d, model_2d.state_dict())
    assert report.kept == ()  # a backbone has no head: everything came from 2D
    assert report.inflated and report.copied
    assert isinstance(model_2d.backbone, DenseNet | ResNet | InceptionV1)
    return model_2d.backbone, model_3d


def test_inflated_densenet_reproduces_2d_features_at_every_depth() -> None:
    depth, size = 8, 64
    model_2d, model_3d = _pair("densenet121")
    image = torch.rand(1, 3, size, size)
    with torch.no_grad():
        features_2d = model_2d.feature_map(image)
        features_3d = model_3d.feature_map(image.unsqueeze(2).repeat(1, 1, depth, 1, 1))
        pooled_2d, pooled_3d = model_2d(image), model_3d(image.unsqueeze(2).repeat(1, 1, depth, 1, 1))
    scale = float(features_2d.abs().max())
    for d in range(features_3d.shape[2]):
        assert torch.allclose(features_3d[:, :, d], features_2d, atol=1e-5 * scale)
    assert torch.allclose(pooled_3d, pooled_2d, atol=1e-5 * scale)


@pytest.mark.parametrize(
    ("family", "depth", "size"),
    [("resnet18", 256, 32), ("inception_v1", 128, 32)],
)
def test_inflated_networks_reproduce_2d_features_away_from_depth_borders(family: str, depth: int, size: int) -> None:
    model_2d, model_3d = _pair(family)
    image = torch.rand(1, 3, size, size)
    with torch.no_grad():
        features_2d = model_2d.feature_map(image)
        features_3d = model_3d.feature_map(image.unsqueeze(2).repeat(1, 1, depth, 1, 1))
    scale = float(features_2d.abs().max())
    centre = features_3d.shape[2] // 2
    assert torch.allclose(features_3d[:, :, centre], features_2d, atol=1e-5 * scale)
    assert not torch.allclose(features_3d[:, :, 0], features_2d, atol=1e-2 * scale)


def test_inflation_rule_repeats_and_divides_and_keeps_depth_one_kernels() -> None:
    model_2d = build("densenet121_2d")
    model_3d = build("densenet121_3d")
    state = inflate_state_dict(model_2d.state_dict(), model_3d)
    stem_2d = model_2d.state_dict()["backbone.features.conv0.weight"]
    conv_2d = model_2d.state_dict()["backbone.features.denseblock1.denselayer1.conv2.weight"]
    assert torch.equal(state["features.conv0.weight"], stem_2d.unsqueeze(2))  # 1x7x7 stem as is
    conv_3d = state["features.denseblock1.denselayer1.conv2.weight"]
    assert conv_3d.shape[2] == 3
    for d in range(3):
        assert torch.allclose(conv_3d[:, :, d], conv_2d / 3)
    assert "classifier.weight" not in state  # the head is never inflated (new CO-RADS head)


def test_mismatched_channels_are_refused() -> None:
    model_2d = build("resnet18_2d", in_channels=1)
    with pytest.raises(ValueError, match="conv1.weight"):
        inflate_state_dict(model_2d.state_dict(), build("resnet18_3d"))
