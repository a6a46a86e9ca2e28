"""ResNet-18/34/50 in 2D and 3D, as compared in thesis section 3.3.2 and Table 3.3.

2D is torchvision's ResNet (He et al.; "v1.5": the stride of a bottleneck sits on its 3x3
convolution).  3D follows kenshohara/3D-ResNets-PyTorch ``models/resnet.py``, which is the same
network with every kernel cubed except for two choices that set the FLOPs of Table 3.3: a 7x7x7
stem with stride (1, 2, 2) (no depth stride) and a 3x3x3 stride-2 max pool.  Shortcuts are
projection ("type B": 1x1 convolution and BN) where the shape changes, identity elsewhere.

Module names follow torchvision (``conv1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``, ``fc``)
so that 2D ImageNet weights load and inflate by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import torch.utils.checkpoint as cp
from torch import Tensor, nn

from models.zoo._layers import batch_norm, check_spatial_dims, conv, max_pool

__all__ = ["RESNET_CONFIGS", "ResNet"]

#: Block type and blocks per stage (He et al., Table 1).
RESNET_CONFIGS: dict[int, tuple[Literal["basic", "bottleneck"], tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (one ReLU module, applied twice)."""

    #: ``bn(conv(x))`` pairs, folded for inference (models.device.folded_for_inference).
    BATCHNORM_AFTER_CONV: ClassVar[tuple[tuple[str, str], ...]] = (("conv1", "bn1"), ("conv2", "bn2"))

    expansion = 1

    def __init__(self, spatial_dims: int, inplanes: int, planes: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = conv(spatial_dims, inplanes, planes, 3, stride, 1)
        self.bn1 = batch_norm(spatial_dims, planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv(spatial_dims, planes, planes, 3, 1, 1)
        self.bn2 = batch_norm(spatial_dims, planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """``relu(x' + F(x))`` with ``x'`` the (projected) input."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        result: Tensor = self.relu(out)
        return result


class _Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, with a residual connection."""

    #: ``bn(conv(x))`` pairs, folded for inference (models.device.folded_for_inference).
    BATCHNORM_AFTER_CONV: ClassVar[tuple[tuple[str, str], ...]] = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))

    expansion = 4

    def __init__(self, spatial_dims: int, inplanes: int, planes: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = conv(spatial_dims, inplanes, planes, 1)
        self.bn1 = batch_norm(spatial_dims, planes)
        self.conv2 = conv(spatial_dims, planes, planes, 3, stride, 1)
        self.bn2 = batch_norm(spatial_dims, planes)
        self.conv3 = conv(spatial_dims, planes, planes * self.expansion, 1)
        self.bn3 = batch_norm(spatial_dims, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """``relu(x' + F(x))`` with ``x'`` the (projected) input."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        result: Tensor = self.relu(out)
        return result


class ResNet(nn.Module):
    """ResNet in 2D (torchvision) or 3D (kenshohara 3D-ResNets layout).

    Parameters
    ----------
    spatial_dims : int
        2 for slices ``(N, C, H, W)``, 3 for volumes ``(N, C, D, H, W)``.
    in_channels : int
        Input channels (3 in the thesis; T§3.3.3).
    out_channels : int or None
        Outputs of the final linear layer; ``None`` builds the backbone only, whose ``forward``
        returns the globally pooled features (``num_features`` per sample).
    block : {"basic", "bottleneck"}
        Residual block type (:data:`RESNET_CONFIGS`).
    layers : sequence of 4 int
        Blocks per stage.
    widths : sequence of 4 int
        Planes per stage (64, 128, 256, 512); bottleneck outputs are 4 times wider.
    gradient_checkpointing : bool
        Recompute every residual block in the backward pass instead of storing its activations.

    Raises
    ------
    ValueError
        For ``spatial_dims`` other than 2 or 3, a wrong number of stages, or a non-positive size.
    """

    #: ``bn(conv(x))`` pairs, folded for inference (models.device.folded_for_inference).
    BATCHNORM_AFTER_CONV: ClassVar[tuple[tuple[str, str], ...]] = (("conv1", "bn1"),)

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int | None,
        *,
        block: Literal["basic", "bottleneck"],
        layers: Sequence[int],
        widths: Sequence[int] = (64, 128, 256, 512),
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
        if len(layers) != 4 or len(widths) != 4 or min(*layers, *widths) < 1:
            raise ValueError(f"layers and widths need 4 positive entries, got {tuple(layers)} and {tuple(widths)}")
        if in_channels < 1 or (out_channels is not None and out_channels < 1):
            raise ValueError(f"channel counts must be positive, got in {in_channels}, out {out_channels}")
        block_type = _BasicBlock if block == "basic" else _Bottleneck
        self.spatial_dims = spatial_dims
        if spatial_dims == 3:
            self.conv1 = conv(3, in_channels, widths[0], 7, (1, 2, 2), 3)
        else:
            self.conv1 = conv(2, in_channels, widths[0], 7, 2, 3)
        self.bn1 = batch_norm(spatial_dims, widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = max_pool(spatial_dims, 3, 2, 1)
        inplanes = widths[0]
        stages: list[nn.Sequential] = []
        for i, (planes, count) in enumerate(zip(widths, layers, strict=True)):
            stride = 1 if i == 0 else 2
            blocks: list[nn.Module] = []
            for j in range(count):
                downsample = None
                if j == 0 and (stride != 1 or inplanes != planes * block_type.expansion):
                    downsample = nn.Sequential(
                        conv(spatial_dims, inplanes, planes * block_type.expansion, 1, stride),
                        batch_norm(spatial_dims, planes * block_type.expansion),
                    )
                blocks.append(block_type(spatial_dims, inplanes, planes, stride if j == 0 else 1, downsample))
                inplanes = planes * block_type.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool: nn.Module = nn.AdaptiveAvgPool3d(1) if spatial_dims == 3 else nn.AdaptiveAvgPool2d(1)
        self.num_features = inplanes
        self.fc = nn.Linear(inplanes, out_channels) if out_channels is not None else None
        self.gradient_checkpointing = gradient_checkpointing
        self._initialise()

    def _initialise(self) -> None:
        """torchvision's ResNet initialisation: He-normal (fan-out) convolutions, unit BN."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm3d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def feature_map(self, x: Tensor) -> Tensor:
        """The output of the last stage, before global pooling (``num_features`` channels)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                if self.gradient_checkpointing and self.training and x.requires_grad:
                    x = cp.checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, out_channels)``, or pooled features ``(N, num_features)`` without a head."""
        pooled: Tensor = self.avgpool(self.feature_map(x)).flatten(1)
        return pooled if self.fc is None else self.fc(pooled)
