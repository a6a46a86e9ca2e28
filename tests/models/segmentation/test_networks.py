"""Network layouts: parameter counts and FLOPs against the published figures, shapes, validation.

Full-size networks are built on ``torch.device("meta")``: counting their parameters or FLOPs
allocates nothing.
"""

from __future__ import annotations

import pytest
import torch

from models.segmentation.flops import count_flops, count_parameters
from models.segmentation.lesions import build_lesion_network
from models.segmentation.lobes import build_lobe_network
from models.segmentation.nnunet import CORADS_NNUNET_PATCH, GenericUNet
from models.segmentation.resnet_unet import R3D18Encoder, ResNet18UNet
from models.segmentation.summary import segmentation_summaries

#: Published lesion nnU-Net figures (thesis T§3.4.5).
PUBLISHED_PARAMETERS = 29.69e6
PUBLISHED_FLOPS = 9.41e11
#: torchvision r3d_18 has 33 371 472 parameters, of which the 400-way classifier has 512*400 + 400.
R3D18_WITHOUT_FC = 33_371_472 - (512 * 400 + 400)


def _meta(build: object) -> torch.nn.Module:
    with torch.device("meta"):
        network = build()  # type: ignore[operator]
    assert isinstance(network, torch.nn.Module)
    return network


def test_lesion_nnunet_reproduces_the_published_parameter_count() -> None:
    count = count_parameters(_meta(lambda: build_lesion_network("nnunet")))
    assert abs(count - PUBLISHED_PARAMETERS) / PUBLISHED_PARAMETERS < 0.005
    assert count == 29_695_280  # pins the layout: 30..320 features, five 2x2x2 poolings, 3 classes


def test_lesion_nnunet_flops_per_patch_match_the_published_figure() -> None:
    flops = count_flops(_meta(lambda: build_lesion_network("nnunet")), (1, 1, *CORADS_NNUNET_PATCH))
    assert flops.flops == 2 * flops.macs
    assert abs(flops.flops - PUBLISHED_FLOPS) / PUBLISHED_FLOPS < 0.01  # 9.46e11, +0.5 %
    assert flops.elementwise > 0  # norms and activations are counted apart


def test_flop_count_of_a_single_convolution_is_two_macs_per_weight_and_position() -> None:
    conv = torch.nn.Conv3d(2, 4, 3, padding=1, bias=True)
    flops = count_flops(conv, (1, 2, 5, 6, 7))
    assert flops.macs == 5 * 6 * 7 * 4 * 2 * 27
    transposed = torch.nn.ConvTranspose3d(4, 2, 2, 2, bias=False)
    assert count_flops(transposed, (1, 4, 3, 3, 3)).macs == 27 * 4 * 2 * 8


def test_lobe_network_has_six_outputs_and_the_nnunet_size() -> None:
    network = _meta(build_lobe_network)
    assert isinstance(network, GenericUNet)
    assert network.out_channels == 6
    assert count_parameters(network) == 29_697_590  # the lesion layout plus 3 more head channels


def test_s4_encoder_has_the_layer_shapes_and_keys_of_torchvision_r3d_18() -> None:
    encoder = _meta(R3D18Encoder)
    assert count_parameters(encoder) == R3D18_WITHOUT_FC
    shapes = {key: tuple(value.shape) for key, value in encoder.state_dict().items()}
    assert shapes["stem.0.weight"] == (64, 3, 3, 7, 7)
    assert shapes["layer1.0.conv1.0.weight"] == (64, 64, 3, 3, 3)
    assert shapes["layer2.0.downsample.0.weight"] == (128, 64, 1, 1, 1)
    assert shapes["layer4.1.conv2.1.running_var"] == (512,)
    assert "layer1.0.downsample.0.weight" not in shapes  # stage 1 keeps width and resolution


def test_s4_unet_parameter_count() -> None:
    # S4 publishes no count; this pins our reading of S4 §2.3 (see resnet_unet's docstring).
    network = _meta(lambda: build_lesion_network("resnet18_unet"))
    assert count_parameters(network) == 90_531_312


def test_nnunet_keys_follow_nnunet_v1_generic_unet() -> None:
    shapes = {k: tuple(v.shape) for k, v in _meta(lambda: build_lesion_network("nnunet")).state_dict().items()}
    assert shapes["conv_blocks_context.0.blocks.0.conv.weight"] == (30, 1, 3, 3, 3)
    assert shapes["conv_blocks_context.5.0.blocks.0.conv.weight"] == (320, 320, 3, 3, 3)
    assert shapes["tu.0.weight"] == (320, 320, 2, 2, 2)
    assert shapes["conv_blocks_localization.4.0.blocks.0.instnorm.weight"] == (30,)
    assert shapes["seg_outputs.4.weight"] == (3, 30, 1, 1, 1)
    assert not any(key.startswith("tu.") and key.endswith(".bias") for key in shapes)


def test_summaries_name_every_network_with_published_figures() -> None:
    summaries = segmentation_summaries()
    assert set(summaries) == {"lobe_unet", "lesion_nnunet", "lesion_resnet18_unet"}
    nnunet = summaries["lesion_nnunet"]
    assert nnunet.parameters == 29_695_280 and nnunet.published_flops == PUBLISHED_FLOPS
    assert nnunet.published_parameters == nnunet.reference_parameters == 29_690_000
    assert nnunet.reference_parameters_kind == "published"
    assert nnunet.parameters_relative_difference is not None and abs(nnunet.parameters_relative_difference) < 0.005
    for name in ("lobe_unet", "lesion_resnet18_unet"):
        assert summaries[name].reference_parameters_kind == "none" and summaries[name].published_parameters is None
    # Issue 16: stand-ins are named as stand-ins, with what is guessed.
    assert summaries["lobe_unet"].source.startswith("reconstruction") and "RTSU-Net" in summaries["lobe_unet"].source
    assert nnunet.source.startswith("reconstruction") and "guessed" in nnunet.source
    assert summaries["lesion_resnet18_unet"].input_shape == (1, 3, 20, 256, 256)


def test_generic_unet_outputs_logits_at_input_size_and_deep_supervision_heads() -> None:
    network = GenericUNet(3, 1, 4, (4, 8, 16), ((1, 2, 2), (2, 2, 2))).eval()
    x = torch.randn(1, 1, 8, 16, 16)
    assert network(x).shape == (1, 4, 8, 16, 16)
    heads = network.forward_deep_supervision(x)
    assert [tuple(h.shape[2:]) for h in heads] == [(8, 16, 16), (8, 8, 8)]
    assert torch.allclose(heads[0], network(x))
    assert network.divisor == (2, 4, 4)


def test_s4_unet_restores_odd_input_sizes() -> None:
    network = _meta(ResNet18UNet).eval()
    with torch.no_grad():
        out = network(torch.empty(1, 3, 5, 36, 44, device="meta"))  # z: 5 -> 3 -> 2 -> 1 -> 1
    assert out.shape == (1, 2, 5, 36, 44)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spatial_dims": 2}, "spatial_dims"),
        ({"features": (4, 8)}, "one more feature width"),
        ({"strides": ((2, 2), (2, 2))}, "three positive"),
        ({"kernel_sizes": ((3, 3, 3), (2, 3, 3), (3, 3, 3))}, "odd"),
        ({"out_channels": 0}, "positive"),
        ({"convs_per_stage": 1}, "at least 2"),
    ],
)
def test_generic_unet_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 2,
        "features": (4, 8, 16),
        "strides": ((2, 2, 2), (2, 2, 2)),
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        GenericUNet(**arguments)  # type: ignore[arg-type]


def test_s4_unet_and_lesion_builder_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="3-D only"):
        ResNet18UNet(spatial_dims=2)
    with pytest.raises(ValueError, match="background"):
        ResNet18UNet(out_channels=1)
    with pytest.raises(ValueError, match="unknown lesion network"):
        build_lesion_network("unet")  # type: ignore[arg-type]
