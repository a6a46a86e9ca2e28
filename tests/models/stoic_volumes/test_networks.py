"""The members' networks: parameter counts against the spec, layouts that set the numbers, arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from monai.networks.nets.densenet import DenseNet as MonaiDenseNet
from torch import nn

from models.stoic import baseline, code1055, deakin, flyingbird, uaux2
from models.stoic.baseline import BaselineConfig, BaselineI3D
from models.stoic.code1055 import Code1055Config
from models.stoic.convnext3d import ConvNeXt3d
from models.stoic.deakin import DeakinDenseNet
from models.stoic.flyingbird import FlyingBirdResNet
from models.stoic.uaux2 import Uaux2DenseNet, Uaux2ResNet34
from models.zoo import build, count_parameters
from models.zoo.catalog import I3D_BACKBONE_PARAMETERS


def _on_meta(factory: Callable[[], nn.Module]) -> nn.Module:
    with torch.device("meta"):
        return factory()


def test_code1055_convnext_tiny_matches_the_31_9_million_counted_from_the_authors_code() -> None:
    params = count_parameters(_on_meta(ConvNeXt3d))
    assert abs(params - code1055.COMPUTED_PARAMETERS) / code1055.COMPUTED_PARAMETERS < 0.01, params  # spec section 4
    assert params == 31_916_450  # 3-3-9-3 blocks, 96-768 channels, 7^3 depthwise, 1 input channel


def test_flyingbird_half_width_resnet18_matches_the_8_30_million_counted_from_the_authors_code() -> None:
    params = count_parameters(_on_meta(FlyingBirdResNet))
    assert abs(params - flyingbird.COMPUTED_PARAMETERS) / flyingbird.COMPUTED_PARAMETERS < 0.01, params
    # A full-width ResNet-18 would have four times the convolution weights.
    assert count_parameters(_on_meta(lambda: FlyingBirdResNet(widths=(64, 128, 256, 512)))) > 3 * params


def test_baseline_i3d_is_the_zoo_backbone_of_12_29_million_with_a_two_way_head() -> None:
    network = BaselineI3D()
    backbone = count_parameters(network.backbone)
    assert backbone == I3D_BACKBONE_PARAMETERS == 12_287_264
    assert round(backbone / 1e6, 2) == 12.29  # thesis Table 3.3, Inception-v1 3D
    assert count_parameters(network) == backbone + 1024 * 2 + 2
    norms = [m for m in network.backbone.modules() if isinstance(m, nn.BatchNorm3d)]
    assert norms and all(m.eps == 1e-5 for m in norms)  # i3dpt.py: PyTorch's default, not pytorch-i3d's 1e-3


def test_baseline_head_pools_the_240_cube_final_map_with_a_2x7x7_window() -> None:
    network = _on_meta(BaselineI3D)
    assert isinstance(network, BaselineI3D)
    feature_map = network.backbone.feature_map(torch.empty(1, 3, 240, 240, 240, device="meta"))
    assert tuple(feature_map.shape) == (1, 1024, 30, 8, 8)
    assert tuple(network.pool(feature_map).shape) == (1, 1024, 29, 2, 2)  # then averaged: border weighted less


def test_single_channel_inputs_are_expanded_to_the_three_rgb_channels() -> None:
    torch.manual_seed(0)
    x = torch.rand(1, 1, 16, 16, 16)
    for network in (BaselineI3D(pool_kernel=(1, 1, 1)), DeakinDenseNet(growth_rate=4, block_config=(1, 1))):
        network.eval()
        with torch.no_grad():
            assert torch.equal(network(x), network(x.expand(-1, 3, -1, -1, -1)))


def test_deakin_densenet201_is_the_zoo_layout_with_two_outputs() -> None:
    ours = count_parameters(_on_meta(DeakinDenseNet))
    assert ours == count_parameters(_on_meta(lambda: build("densenet201_3d", num_outputs=2))) == 25_322_114


def test_uaux2_densenet121_is_monai_densenet121_plus_the_metadata_head() -> None:
    backbone = MonaiDenseNet(3, 3, 1).features
    head = (1024 * 512 + 512) + ((512 + 3) * 512 + 512) + (512 * 256 + 256) + (256 * 2 + 2)
    assert count_parameters(_on_meta(Uaux2DenseNet)) == count_parameters(backbone) + head == 12_207_362


def _preactivation_resnet34_parameters(width: int = 64, layers: tuple[int, ...] = (3, 4, 6, 3)) -> int:
    """classification_models_3D ResNet-34 counted by hand: input shift, stem, blocks, final BN, head."""
    total = 3 + 3 * width * 343 + 2 * width  # bn_data (shift only), conv0, bn0
    inplanes = width
    for stage, count in enumerate(layers):
        planes = width * 2**stage
        for j in range(count):
            total += 2 * inplanes + inplanes * planes * 27 + 2 * planes + planes * planes * 27
            total += inplanes * planes if j == 0 else 0  # 1^3 projection on each stage's first block
            inplanes = planes
    return total + 2 * inplanes + (inplanes * 512 + 512) + (512 * 3 + 3)


def test_uaux2_resnet34_is_the_pre_activation_layout() -> None:
    assert count_parameters(_on_meta(Uaux2ResNet34)) == _preactivation_resnet34_parameters() == 63_780_166
    network = Uaux2ResNet34(layers=(1, 1, 1, 1), width=4)
    assert network.bn_data.weight is None  # Keras scale=False: a shift but no scale
    assert tuple(network(torch.rand(2, 3, 16, 16, 16)).shape) == (2, 3)


def test_flyingbird_age_enters_linearly_after_the_image_logits() -> None:
    torch.manual_seed(0)
    network = FlyingBirdResNet(widths=(4, 8, 8, 8)).eval()
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        stem = network.conv1(x)
        difference = network(x, torch.tensor([[0.8]])) - network(x, torch.tensor([[0.2]]))
    assert tuple(stem.shape[2:]) == (16, 16, 16)  # 7^3 stride 2 in all axes (the zoo's keeps depth)
    assert torch.allclose(difference[0], network.fc_img_info.weight[:, 2] * 0.6, atol=1e-6)


def test_convnext_uses_metadata_only_when_given_and_drop_path_only_in_training() -> None:
    torch.manual_seed(0)
    # Layer scale 1 instead of 1e-6, so that dropped residual branches show.
    network = ConvNeXt3d(
        depths=(1, 1, 1, 1), dims=(4, 8, 8, 8), stem_stride=2, drop_path_rate=0.5, layer_scale_init=1.0
    )
    x = torch.rand(2, 1, 16, 16, 16)
    metadata = torch.tensor([[1.0, 0.0, 0.0, 0.7], [0.0, 1.0, 0.0, 0.5]])
    nn.init.normal_(network.metadata_prehead.weight)
    network.eval()
    with torch.no_grad():
        image_only = network(x)
        expected = network.head(torch.relu(network.pre_head(network.features(x))))
        assert torch.allclose(image_only, expected)
        assert not torch.allclose(network(x, metadata), image_only)
        assert torch.equal(network(x), image_only)  # deterministic in eval
    network.train()
    with torch.no_grad():
        torch.manual_seed(1)
        first = network.features(x)
        torch.manual_seed(2)
        assert not torch.allclose(first, network.features(x))  # stochastic depth draws


@pytest.mark.parametrize(
    ("factory", "kwargs"),
    [
        (ConvNeXt3d, {"depths": (3, 3, 9)}),
        (ConvNeXt3d, {"kernel_size": 6}),
        (FlyingBirdResNet, {"widths": (32, 64, 128)}),
        (Uaux2DenseNet, {"head": (512, 256)}),
        (Uaux2ResNet34, {"layers": (3, 4, 6)}),
        (BaselineI3D, {"pool_kernel": (2, 7)}),
        (BaselineConfig, {"shape": (240, 240, 239)}),
        (Code1055Config, {"folds": 0}),
    ],
)
def test_invalid_arguments_are_refused(factory: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        factory(**kwargs)


def test_every_summary_row_counts_parameters_and_flops_on_the_meta_device() -> None:
    rows = [row for module in (baseline, code1055, flyingbird, uaux2, deakin) for row in module.summary()]
    assert {row["name"] for row in rows} >= {
        "stoic_baseline_i3d",
        "stoic_code1055_convnext_tiny_3d",
        "stoic_flyingbird_resnet18_half",
        "stoic_uaux2_densenet121_3d_metadata",
        "stoic_uaux2_resnet34_3d",
        "stoic_deakin_densenet201_3d",
    }
    for row in rows:
        assert row["parameters"] > 1e6 and row["flops"] > 1e10
        if row["reference_parameters"] is not None:
            assert abs(row["parameters_relative_difference"]) < 0.01, row
        else:
            assert row["reference_parameters_kind"] == "none" and row["parameters_relative_difference"] is None
    by_name = {row["name"]: row for row in rows}
    flyingbird_row = by_name["stoic_flyingbird_resnet18_half"]
    assert flyingbird_row["forward_passes_per_prediction"] == 2 * 5 * 4  # tasks x folds x views
    assert by_name["stoic_code1055_convnext_tiny_3d"]["input_shape"] == [1, 224, 224, 224]


def test_developer_counts_are_labelled_computed_not_published() -> None:
    # Issue 16: the I3D backbone, Code 1055 and Flying Bird counts were computed by the lungcds
    # developers from the authors' code; none of them was printed by the thesis or the authors.
    rows = {row["name"]: row for module in (baseline, code1055, flyingbird) for row in module.summary()}
    for name, count in (
        ("stoic_baseline_i3d_backbone", I3D_BACKBONE_PARAMETERS),
        ("stoic_code1055_convnext_tiny_3d", code1055.COMPUTED_PARAMETERS),
        ("stoic_flyingbird_resnet18_half", flyingbird.COMPUTED_PARAMETERS),
    ):
        row = rows[name]
        assert row["reference_parameters"] == count, name
        assert row["reference_parameters_kind"] == "computed_from_authors_code", name
        assert row["published_parameters"] is None, name
        assert "not published" in row["reference_parameters_source"], name
    assert rows["stoic_baseline_i3d"]["reference_parameters_kind"] == "none"
