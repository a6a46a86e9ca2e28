"""3D ConvNeXt as Code 1055 ran it in STOIC2021 (C1055 ``training/algorithm/models/convnext.py``).

ConvNeXt (Liu et al. 2022) with every 2D operation made 3D: a 4^3 stride-4 "patchify" stem, four
stages of blocks (7^3 depthwise convolution, LayerNorm, pointwise 4x expansion, GELU, pointwise
projection, layer scale, stochastic depth) separated by LayerNorm + 2^3 stride-2 convolutions, a
final LayerNorm of the globally averaged features, and Code 1055's head: ``pre_head`` (768 ->
768), plus, when age and sex are given, ``metadata_prehead`` of ``[sex one-hot F/M/other,
age / 85]`` (no bias), a ReLU and ``head`` (768 -> 2).  The Tiny configuration (3-3-9-3 blocks,
96-768 channels) on one input channel has 31 916 450 parameters (models spec section 4: about
31.9 M, verified); ``metadata_embedding`` belongs to the authors' transformer variant, which the
submission did not use, and is kept only so that their state dicts load strictly.  Module names
follow the authors' ``ConvNeXt3d``, so a checkpoint's ``main_model.`` entries load after the
prefix is removed.

Nothing here depends on Code 1055's pretraining (Gaussian-inflated ImageNet weights and
multitask segmentation/classification pretraining, T§4.3.3): that only chose initial weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "TINY_DEPTHS",
    "TINY_DIMS",
    "ConvNeXt3d",
    "ConvNeXtBackbone3d",
    "ConvNeXtBlock3d",
    "LayerNormChannelsFirst",
    "drop_path",
]

#: ConvNeXt-Tiny: blocks per stage and channels per stage (Liu et al. 2022, Table 9).
TINY_DEPTHS: tuple[int, int, int, int] = (3, 3, 9, 3)
TINY_DIMS: tuple[int, int, int, int] = (96, 192, 384, 768)


def drop_path(x: Tensor, probability: float, training: bool) -> Tensor:
    """Stochastic depth: zero a sample's residual branch with ``probability``, rescale the rest.

    As timm's ``DropPath`` (``scale_by_keep``), which the authors used; the identity in eval mode.
    """
    if probability == 0.0 or not training:
        return x
    keep = 1.0 - probability
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class LayerNormChannelsFirst(nn.Module):
    """LayerNorm over the channel axis of ``(N, C, D, H, W)`` (the authors' ``channels_first`` form).

    Parameters
    ----------
    channels : int
        ``C``.
    eps : float
        Added to the variance (1e-6 in ConvNeXt).
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """Normalised ``x``, with a per-channel affine map."""
        mean = x.mean(1, keepdim=True)
        variance = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(variance + self.eps)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return self.weight.view(shape) * x + self.bias.view(shape)


class ConvNeXtBlock3d(nn.Module):
    """Depthwise conv, LayerNorm, Linear(4C), GELU, Linear(C), layer scale, stochastic depth, residual.

    Parameters
    ----------
    dim : int
        Channels.
    kernel_size : int
        Depthwise kernel (7).
    drop_path_rate : float
        Stochastic depth probability of this block.
    layer_scale_init : float
        Initial layer-scale value (1e-6); 0 disables layer scale.
    """

    def __init__(self, dim: int, kernel_size: int = 7, drop_path_rate: float = 0.0, layer_scale_init: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv3d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale_init * torch.ones(dim)) if layer_scale_init > 0 else None
        self.drop_path_rate = drop_path_rate

    def forward(self, x: Tensor) -> Tensor:
        """``x + drop_path(gamma * mlp(norm(dwconv(x))))``."""
        y = self.dwconv(x).permute(0, 2, 3, 4, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        if self.gamma is not None:
            y = self.gamma * y
        return x + drop_path(y.permute(0, 4, 1, 2, 3), self.drop_path_rate, self.training)


class ConvNeXtBackbone3d(nn.Module):
    """3D ConvNeXt without a head: patchify stem, four stages of :class:`ConvNeXtBlock3d` separated
    by LayerNorm + 2^3 stride-2 convolutions, and the LayerNorm of the globally averaged features.

    Code 1055's :class:`ConvNeXt3d` and etro's ConvNeXt (:mod:`models.stoic.etro`) add their heads;
    module names follow the ConvNeXt reference code both teams started from (``downsample_layers``,
    ``stages``, ``norm``), so their state dicts load as they are.  A subclass registers its head and
    then calls ``self.apply(self.initialise)``, so that weights are drawn in module order as the
    authors' code drew them.

    Parameters
    ----------
    in_channels : int
        Input channels.
    depths, dims : sequence of 4 int
        Blocks and channels per stage.
    kernel_size : int
        Depthwise kernel (7).
    stem_stride : int
        Kernel and stride of the patchify stem (4).
    drop_path_rate : float
        Stochastic depth, rising linearly from 0 to this over the blocks.
    layer_scale_init : float
        Initial layer scale (1e-6).

    Raises
    ------
    ValueError
        For a wrong number of stages, non-positive sizes, an even kernel or a rate outside [0, 1).
    """

    def __init__(
        self,
        in_channels: int,
        depths: Sequence[int],
        dims: Sequence[int],
        *,
        kernel_size: int = 7,
        stem_stride: int = 4,
        drop_path_rate: float = 0.0,
        layer_scale_init: float = 1e-6,
    ) -> None:
        super().__init__()
        if len(depths) != 4 or len(dims) != 4 or min(*depths, *dims) < 1:
            raise ValueError(f"depths and dims need 4 positive entries, got {tuple(depths)} and {tuple(dims)}")
        if min(in_channels, kernel_size, stem_stride) < 1 or kernel_size % 2 == 0:
            raise ValueError("channels and stem stride must be positive; kernel positive and odd")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        self.downsample_layers = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv3d(in_channels, dims[0], stem_stride, stride=stem_stride), LayerNormChannelsFirst(dims[0])
                )
            ]
        )
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(LayerNormChannelsFirst(dims[i]), nn.Conv3d(dims[i], dims[i + 1], 2, stride=2))
            )
        total = sum(depths)
        # torch.linspace(0, rate, total) as the authors, in Python so that meta-device builds work.
        rates = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        self.stages = nn.ModuleList()
        first = 0
        for dim, depth in zip(dims, depths, strict=True):
            blocks = [ConvNeXtBlock3d(dim, kernel_size, rates[first + j], layer_scale_init) for j in range(depth)]
            self.stages.append(nn.Sequential(*blocks))
            first += depth
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.num_features = dims[-1]

    @staticmethod
    def initialise(module: nn.Module) -> None:
        """Truncated-normal (sd 0.02) convolutions and linear layers, zero biases (ConvNeXt)."""
        if isinstance(module, nn.Conv3d | nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def features(self, x: Tensor) -> Tensor:
        """LayerNorm of the globally averaged last-stage features ``(N, dims[-1])``."""
        for downsample, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(downsample(x))
        out: Tensor = self.norm(x.mean(dim=(-3, -2, -1)))
        return out


class ConvNeXt3d(ConvNeXtBackbone3d):
    """3D ConvNeXt with Code 1055's head (module docstring).

    Parameters
    ----------
    in_channels : int
        Input channels (1: Code 1055 fed the CT as one channel, C1055 ``modelconfig.in_chan``).
    num_classes : int
        Outputs of ``head`` (2: index 0 COVID-19, index 1 severe; only the latter was trained).
    depths, dims : sequence of 4 int
        Blocks and channels per stage (ConvNeXt-Tiny by default).
    kernel_size, stem_stride, drop_path_rate, layer_scale_init
        As :class:`ConvNeXtBackbone3d` (stochastic depth 0.1 in training).
    metadata_features : int
        Length of the metadata vector (4: sex one-hot F/M/other, age / 85).

    Raises
    ------
    ValueError
        For non-positive classes or metadata size, or a backbone :class:`ConvNeXtBackbone3d` refuses.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        depths: Sequence[int] = TINY_DEPTHS,
        dims: Sequence[int] = TINY_DIMS,
        *,
        kernel_size: int = 7,
        stem_stride: int = 4,
        drop_path_rate: float = 0.0,
        layer_scale_init: float = 1e-6,
        metadata_features: int = 4,
    ) -> None:
        if min(num_classes, metadata_features) < 1:
            raise ValueError(f"classes and metadata size must be positive, got {num_classes} and {metadata_features}")
        super().__init__(
            in_channels,
            depths,
            dims,
            kernel_size=kernel_size,
            stem_stride=stem_stride,
            drop_path_rate=drop_path_rate,
            layer_scale_init=layer_scale_init,
        )
        self.pre_head = nn.Linear(dims[-1], dims[-1])
        self.metadata_prehead = nn.Linear(metadata_features, dims[-1], bias=False)
        self.head = nn.Linear(dims[-1], num_classes)
        self.metadata_embedding = nn.Linear(metadata_features, dims[-1])
        self.apply(self.initialise)

    def forward(self, x: Tensor, metadata: Tensor | None = None) -> Tensor:
        """Logits ``(N, num_classes)``; ``metadata`` ``(N, 4)`` enters before the ReLU when given.

        Code 1055 trained with metadata and submitted without it (C1055 ``submission.py`` calls
        ``model(image)``), so at inference the head is ``head(relu(pre_head(features)))``.
        """
        h = self.pre_head(self.features(x))
        if metadata is not None:
            h = h + self.metadata_prehead(metadata.to(h.dtype))
        out: Tensor = self.head(F.relu(h))
        return out
