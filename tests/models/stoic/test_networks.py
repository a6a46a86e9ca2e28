"""The networks of simon.j, hal9000 and etro: parameter counts against published ones, and layouts.

Full-size networks are built on the meta device, so nothing is allocated.  Published counts are
torchvision's (``vit_l_16``, ``mobilenet_v3_large``, ``resnet18``, ``convnext_base``), which
include ImageNet heads the members do not have; each test removes or swaps exactly those layers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.stoic import etro, hal9000, simonj
from models.stoic.etro import EtroConvNeXt
from models.stoic.hal9000 import Hal9000Member, HalConfig, build_network
from models.stoic.mobilenet import MobileNetV3Large
from models.stoic.simonj import SimonjMember
from models.stoic.vit import VisionTransformer, vit_large_16
from models.zoo import ResNet, count_parameters

#: torchvision's published parameter counts (model documentation, ImageNet-1k heads included).
TORCHVISION_VIT_L_16 = 304_326_632
TORCHVISION_MOBILENET_V3_LARGE = 5_483_032
TORCHVISION_RESNET18 = 11_689_512
TORCHVISION_CONVNEXT_BASE = 88_591_464


def _on_meta(factory: Callable[[], nn.Module]) -> nn.Module:
    with torch.device("meta"):
        return factory()


def _vit_parameters(depth: int, width: int = 1024, patch: int = 16, tokens: int = 197) -> int:
    """ViT parameters by hand: patch projection, CLS token, position embedding, blocks of
    two LayerNorms, biased QKV and projection, and the 4x MLP (12 w^2 + 13 w per block)."""
    embedding = 3 * patch * patch * width + width + width + tokens * width
    return embedding + depth * (12 * width * width + 13 * width)


def test_vit_l16_with_24_blocks_is_torchvision_vit_l_16_without_its_final_norm_and_head() -> None:
    params = count_parameters(_on_meta(vit_large_16))
    assert params == _vit_parameters(24) == 303_299_584
    assert 303e6 < params < 304e6
    final_norm, head = 2 * 1024, 1024 * 1000 + 1000
    assert params + final_norm + head == TORCHVISION_VIT_L_16 == simonj.VIT_L16_PUBLISHED_PARAMETERS


def test_simonj_runs_a_24_block_and_a_16_block_vit_l16() -> None:
    assert count_parameters(_on_meta(lambda: vit_large_16(16))) == _vit_parameters(16) == 202_529_792
    assert SimonjMember.parameter_count() == _vit_parameters(24) + _vit_parameters(16)
    rows = {row["name"]: row for row in simonj.summary()}
    assert [row["parameters"] for row in rows.values()] == [_vit_parameters(24), _vit_parameters(16)]
    assert all(row["input_shape"] == [3, 224, 224] and row["flops"] > 0 for row in rows.values())
    # Linear layers dominate: 2 x 196-197 tokens x 12 w^2 per block, within a few per cent.
    full = rows["stoic_simonj_vit_l16_full_24_blocks"]["flops"]
    assert abs(full - 2 * 197 * 24 * 12 * 1024 * 1024) / full < 0.03


def test_vit_attention_is_softmax_of_scaled_dot_products_per_head() -> None:
    torch.manual_seed(0)
    network = VisionTransformer(image_size=32, patch_size=16, embed_dim=8, depth=1, num_heads=2).eval()
    attention: Any = network.blocks[0].attn
    x = torch.randn(2, 5, 8)
    q, k, v = attention.qkv(x).reshape(2, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(4), dim=-1)
    expected = attention.proj((weights @ v).transpose(1, 2).reshape(2, 5, 8))
    assert torch.allclose(attention(x), expected, atol=1e-6)


def test_vit_returns_the_cls_token_without_a_final_norm_and_refuses_other_sizes() -> None:
    torch.manual_seed(0)
    network = VisionTransformer(image_size=32, patch_size=16, embed_dim=8, depth=2, num_heads=2).eval()
    assert not any(isinstance(m, nn.LayerNorm) and name == "norm" for name, m in network.named_modules())
    images = torch.randn(3, 3, 32, 32)
    tokens = network.patch_embed(images)
    tokens = torch.cat((network.cls_token.expand(3, -1, -1), tokens), dim=1) + network.pos_embed
    for block in network.blocks:
        tokens = block(tokens)
    assert torch.allclose(network(images), tokens[:, 0], atol=1e-6)
    with pytest.raises(ValueError, match="expected images"):
        network(torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match="tile"):
        VisionTransformer(image_size=30, patch_size=16)


def test_mobilenet_v3_large_matches_torchvision_and_hal9000_drops_its_head() -> None:
    assert count_parameters(_on_meta(lambda: MobileNetV3Large(3, 1000))) == TORCHVISION_MOBILENET_V3_LARGE
    backbone = _on_meta(lambda: MobileNetV3Large(3, None))
    assert isinstance(backbone, MobileNetV3Large) and backbone.num_features == 960
    head = (960 * 1280 + 1280) + (1280 * 1000 + 1000)
    assert count_parameters(backbone) == TORCHVISION_MOBILENET_V3_LARGE - head
    network = _on_meta(lambda: build_network("mobilenet_v3_large", HalConfig()))
    assert count_parameters(network) == count_parameters(backbone) + 960 * 2 + 2 == 2_973_874


def test_resnet18_matches_torchvision_and_hal9000_drops_its_head() -> None:
    full = _on_meta(lambda: ResNet(2, 3, 1000, block="basic", layers=(2, 2, 2, 2)))
    assert count_parameters(full) == TORCHVISION_RESNET18
    network = _on_meta(lambda: build_network("resnet18", HalConfig()))
    assert count_parameters(network) == TORCHVISION_RESNET18 - (512 * 1000 + 1000) + 512 * 2 + 2 == 11_177_538


def test_hal9000_has_five_networks_of_each_kind_and_summarises_both() -> None:
    assert HalConfig().kinds == ("mobilenet_v3_large",) * 5 + ("resnet18",) * 5
    assert Hal9000Member.parameter_count() == 5 * 2_973_874 + 5 * 11_177_538
    rows = {row["name"]: row for row in hal9000.summary()}
    assert rows["stoic_hal9000_mobilenet_v3_large"]["parameters"] == 2_973_874
    assert rows["stoic_hal9000_resnet18"]["parameters"] == 11_177_538
    assert all(row["input_shape"] == [32, 3, 224, 224] for row in rows.values())
    assert all(row["forward_passes_per_prediction"] == 45 for row in rows.values())  # 5 networks x 9 views
    # ResNet-18 at 224: 1.82 GFLOPs (2 x MACs) per slice, 32 slices.
    assert abs(rows["stoic_hal9000_resnet18"]["flops"] / 32 - 3.64e9) / 3.64e9 < 0.05


def test_mobilenet_pools_960_features_at_stride_32() -> None:
    network = _on_meta(lambda: MobileNetV3Large(3, None))
    assert isinstance(network, MobileNetV3Large)
    feature_map = network.features(torch.empty(2, 3, 224, 224, device="meta"))
    assert tuple(feature_map.shape) == (2, 960, 7, 7)
    norms = [m for m in network.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.eps == 0.001 for m in norms)  # torchvision's MobileNetV3 choice


def test_etro_convnext_base_3d_is_torchvision_convnext_base_inflated_with_a_two_way_head() -> None:
    """Inflation adds a third kernel axis: stem 4x4 -> 4x4x4, downsampling 2x2 -> 2x2x2, depthwise
    7x7 -> 7x7x7; the 1000-class head becomes 2 classes; every other layer keeps its size."""
    dims, depths = (128, 256, 512, 1024), (3, 3, 27, 3)
    stem = 3 * dims[0] * (4**3 - 4**2)
    downsampling = sum(dims[i] * dims[i + 1] * (2**3 - 2**2) for i in range(3))
    depthwise = sum(d * n for d, n in zip(dims, depths, strict=True)) * (7**3 - 7**2)
    head = (1024 * 2 + 2) - (1024 * 1000 + 1000)
    expected = TORCHVISION_CONVNEXT_BASE + stem + downsampling + depthwise + head
    assert count_parameters(_on_meta(EtroConvNeXt)) == expected == 95_645_570
    row = etro.summary()[0]
    assert row["parameters"] == expected and row["input_shape"] == [3, 112, 224, 224]


def test_etro_convnext_head_is_layernorm_of_the_pooled_features_then_linear() -> None:
    torch.manual_seed(0)
    network = EtroConvNeXt(3, 2, (1, 1, 1, 1), (8, 8, 8, 8)).eval()
    x = torch.randn(1, 3, 32, 32, 32)
    features = x
    for downsample, stage in zip(network.downsample_layers, network.stages, strict=True):
        features = stage(downsample(features))
    pooled = F.layer_norm(features.mean(dim=(-3, -2, -1)), (8,), network.norm.weight, network.norm.bias, 1e-6)
    with torch.no_grad():
        assert torch.allclose(network(x), network.head(pooled), atol=1e-6)
