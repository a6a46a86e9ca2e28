"""DenseNet-121/169/201 in 2D and inflated 3D, as compared in thesis section 3.3.2 and Table 3.3.

2D is torchvision's DenseNet (Huang et al.): 7x7 stride-2 stem, 3x3 stride-2 max pool, dense
layers ``BN-ReLU-Conv1x1-BN-ReLU-Conv3x3`` with growth rate 32 and bottleneck width 4x32,
transitions ``BN-ReLU-Conv1x1-AvgPool2``, a final BN, then ReLU, global average pooling and one
linear layer.  3D is that network inflated as in hassony2/inflated_convnets_pytorch
``I3DenseNet(inflate_block_convs=True)``: the stem convolution stays 1x7x7 with stride (1, 2, 2)
and the stem pool (1, 3, 3) with stride (1, 2, 2) (no depth inflation), dense-layer convolutions
become 3x3x3 with replication padding in depth, bottleneck convolutions 1x1x1, transition pools
2x2x2 with stride 2.  Only these choices reproduce both the parameter counts and the FLOPs of
Table 3.3 (MONAI's DenseNet, with a 7x7x7 stem and isotropic strides, has about a third of
the FLOPs); see ``models.zoo.catalog``.

Module names follow torchvision (``features.conv0``, ``features.denseblock1.denselayer1.conv1``,
``classifier``), so an ImageNet state dict loads into the 2D network and inflates into the 3D
one by name (:mod:`models.zoo.inflation`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import Tensor, nn

from models.zoo._layers import (
    DepthReplicationConv3d,
    avg_pool,
    batch_norm,
    check_spatial_dims,
    conv,
    max_pool,
)

__all__ = ["DENSENET_CONFIGS", "DenseNet"]

#: Dense layers per block of the three depths (Huang et al., Table 1; torchvision).
DENSENET_CONFIGS: dict[int, tuple[int, int, int, int]] = {
    121: (6, 12, 24, 16),
    169: (6, 12, 32, 32),
    201: (6, 12, 48, 32),
}


class _DenseLayer(nn.Module):
    """``BN-ReLU-Conv1-BN-ReLU-Conv3`` producing ``growth_rate`` new feature maps."""

    def __init__(
        self, spatial_dims: int, num_input_features: int, growth_rate: int, bn_size: int, checkpointing: bool
    ) -> None:
        super().__init__()
        width = bn_size * growth_rate
        self.norm1 = batch_norm(spatial_dims, num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = conv(spatial_dims, num_input_features, width, 1)
        self.norm2 = batch_norm(spatial_dims, width)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2: nn.Module = (
            DepthReplicationConv3d(width, growth_rate, (3, 3, 3))
            if spatial_dims == 3
            else conv(2, width, growth_rate, 3, padding=1)
        )
        self.checkpointing = checkpointing

    def _bottleneck(self, *features: Tensor) -> Tensor:
        """Concatenate all earlier feature maps and apply the 1x1 bottleneck."""
        out: Tensor = self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))
        return out

    def forward(self, features: list[Tensor]) -> Tensor:
        """New feature maps from the list of all earlier ones.

        With checkpointing on (training only), the concatenation and bottleneck are recomputed
        in the backward pass instead of stored: the memory that grows quadratically with depth
        in a DenseNet (torchvision's ``memory_efficient``, Pleiss et al.).
        """
        if self.checkpointing and self.training and any(f.requires_grad for f in features):
            bottleneck: Tensor = cp.checkpoint(self._bottleneck, *features, use_reentrant=False)
        else:
            bottleneck = self._bottleneck(*features)
        out: Tensor = self.conv2(self.relu2(self.norm2(bottleneck)))
        return out


class _DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers whose inputs are all earlier outputs of the block."""

    def __init__(
        self,
        spatial_dims: int,
        num_layers: int,
        num_input_features: int,
        growth_rate: int,
        bn_size: int,
        checkpointing: bool,
    ) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = _DenseLayer(spatial_dims, num_input_features + i * growth_rate, growth_rate, bn_size, checkpointing)
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, init_features: Tensor) -> Tensor:
        """All feature maps of the block, concatenated along channels."""
        features = [init_features]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


def _transition(spatial_dims: int, num_input_features: int, num_output_features: int) -> nn.Sequential:
    """``BN-ReLU-Conv1-AvgPool2`` halving channels and every spatial axis (2x2x2 in 3D)."""
    return nn.Sequential(
        OrderedDict(
            norm=batch_norm(spatial_dims, num_input_features),
            relu=nn.ReLU(inplace=True),
            conv=conv(spatial_dims, num_input_features, num_output_features, 1),
            pool=avg_pool(spatial_dims, 2, 2),
        )
    )


class DenseNet(nn.Module):
    """DenseNet in 2D (torchvision layout) or inflated 3D (1x7x7 stem, 3x3x3 dense convolutions).

    Parameters
    ----------
    spatial_dims : int
        2 for slices ``(N, C, H, W)``, 3 for volumes ``(N, C, D, H, W)``.
    in_channels : int
        Input channels (3 in the thesis: CT, lesion map, zeros; T§3.3.3).
    out_channels : int or None
        Outputs of the final linear layer; ``None`` builds the backbone only, whose ``forward``
        returns the globally pooled features (``num_features`` per sample).
    growth_rate : int
        Feature maps added by each dense layer (32 for DenseNet-121/169/201).
    block_config : sequence of int
        Dense layers per block (:data:`DENSENET_CONFIGS`).
    num_init_features : int
        Channels of the stem convolution (64).
    bn_size : int
        Bottleneck width as a multiple of ``growth_rate`` (4).
    gradient_checkpointing : bool
        Recompute each layer's concatenation and bottleneck in the backward pass (T§3.3.5 used
        gradient checkpointing where memory required it).

    Raises
    ------
    ValueError
        For ``spatial_dims`` other than 2 or 3, or a non-positive size.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int | None,
        *,
        growth_rate: int = 32,
        block_config: Sequence[int] = DENSENET_CONFIGS[121],
        num_init_features: int = 64,
        bn_size: int = 4,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        sizes = {
            "in_channels": in_channels,
            "growth_rate": growth_rate,
            "num_init_features": num_init_features,
            "bn_size": bn_size,
        }
        for name, value in sizes.items():
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        if out_channels is not None and out_channels < 1:
            raise ValueError(f"out_channels must be positive or None, got {out_channels}")
        if not block_config or any(n < 1 for n in block_config):
            raise ValueError(f"block_config needs at least one block of at least one layer, got {block_config}")
        self.spatial_dims = spatial_dims
        if spatial_dims == 3:
            stem = conv(3, in_channels, num_init_features, (1, 7, 7), (1, 2, 2), (0, 3, 3))
            pool: nn.Module = max_pool(3, (1, 3, 3), (1, 2, 2), (0, 1, 1))
        else:
            stem = conv(2, in_channels, num_init_features, 7, 2, 3)
            pool = max_pool(2, 3, 2, 1)
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv0=stem, norm0=batch_norm(spatial_dims, num_init_features), relu0=nn.ReLU(inplace=True), pool0=pool
        )
        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            layers[f"denseblock{i + 1}"] = _DenseBlock(
                spatial_dims, num_layers, num_features, growth_rate, bn_size, gradient_checkpointing
            )
            num_features += num_layers * growth_rate
            if i != len(block_config) - 1:
                layers[f"transition{i + 1}"] = _transition(spatial_dims, num_features, num_features // 2)
                num_features //= 2
        layers["norm5"] = batch_norm(spatial_dims, num_features)
        self.features = nn.Sequential(layers)
        self.num_features = num_features
        self.classifier = nn.Linear(num_features, out_channels) if out_channels is not None else None
        self._initialise()

    def _initialise(self) -> None:
        """torchvision's DenseNet initialisation: He-normal convolutions, unit BN, zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Conv3d):
                nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm3d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def feature_map(self, x: Tensor) -> Tensor:
        """The rectified feature map before global pooling (``num_features`` channels)."""
        return F.relu(self.features(x))

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, out_channels)``, or pooled features ``(N, num_features)`` without a head."""
        pooled = self.feature_map(x).mean(dim=tuple(range(2, x.ndim)))
        return pooled if self.classifier is None else self.classifier(pooled)
