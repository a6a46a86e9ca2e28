"""Inception-v1 in 2D and as I3D in 3D, as compared in thesis section 3.3.2 and Table 3.3.

3D is the inflated Inception-v1 of Carreira & Zisserman ("I3D") in the layout of
piergiaj/pytorch-i3d ``InceptionI3d``: a 7x7x7 stride-2 stem, (1,3,3)/(1,2,2) max pools after
the stem and before ``inception3a``, a 3x3x3 stride-2 pool before ``inception4a``, a 2x2x2 stride-2 pool
before ``inception5a``, "SAME" padding throughout, BN with eps 1e-3 and functional ReLUs (which
the FLOP convention of Table 3.3 does not count).  2D is the same network on slices: the layout
of torchvision's GoogLeNet, including its 3x3 (not 5x5) convolution in the "5x5" branch
(torchvision issue 906; with real 5x5 kernels the 2D network would have 5.97 M instead of the
published 5.59 M parameters, models spec section 2).  2D uses the same "SAME" padding as 3D; it gives torchvision's
feature-map sizes (its ceil-mode pools are "SAME" on even sizes) and shifts only the stem
convolution's alignment by one pixel, which keeps 2D and 3D exactly related by inflation.

The network ends in global average pooling (1024 features), dropout and one linear layer: the
1x1x1 "logits" convolution of I3D, expressed as a linear layer (same 1024 x n + n parameters).
Weights keep PyTorch's default initialisation, as in pytorch-i3d (torchvision's truncated normal
is slow to draw in torch 2.13 and is replaced by pre-trained weights in practice).  Without a
head (``out_channels=None``) it is the I3D feature extractor that the thesis' I3Dr
(T§2.3.1) and STOIC baseline (T§4.2.5) reuse.  Module names follow torchvision
(``conv1.conv``, ``inception3a.branch2.1.bn``, ``fc``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import Tensor, nn

from models.zoo._layers import batch_norm, check_spatial_dims, same_conv, same_max_pool

__all__ = ["INCEPTION_V1_BLOCKS", "NUM_FEATURES", "InceptionV1"]

#: Inception modules: (name, in, 1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool projection)
#: (Szegedy et al., Table 1; identical in torchvision GoogLeNet and pytorch-i3d).
INCEPTION_V1_BLOCKS: tuple[tuple[str, int, int, int, int, int, int, int], ...] = (
    ("inception3a", 192, 64, 96, 128, 16, 32, 32),
    ("inception3b", 256, 128, 128, 192, 32, 96, 64),
    ("inception4a", 480, 192, 96, 208, 16, 48, 64),
    ("inception4b", 512, 160, 112, 224, 24, 64, 64),
    ("inception4c", 512, 128, 128, 256, 24, 64, 64),
    ("inception4d", 512, 112, 144, 288, 32, 64, 64),
    ("inception4e", 528, 256, 160, 320, 32, 128, 128),
    ("inception5a", 832, 256, 160, 320, 32, 128, 128),
    ("inception5b", 832, 384, 192, 384, 48, 128, 128),
)
#: Channels of the last Inception module (384 + 384 + 128 + 128).
NUM_FEATURES = 1024


class _BasicConv(nn.Module):
    """Bias-free "SAME" convolution, BN (eps 1e-3) and a functional ReLU (``Unit3D``)."""

    #: ``bn(conv(x))`` pairs, folded for inference (models.device.folded_for_inference).
    BATCHNORM_AFTER_CONV: ClassVar[tuple[tuple[str, str], ...]] = (("conv", "bn"),)

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
    ) -> None:
        super().__init__()
        self.conv = same_conv(spatial_dims, in_channels, out_channels, kernel_size, stride)
        self.bn = batch_norm(spatial_dims, out_channels, eps=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        """Convolution, normalisation, rectification."""
        return F.relu(self.bn(self.conv(x)), inplace=True)


class _Inception(nn.Module):
    """Four parallel branches (1x1; 1x1-3x3; 1x1-3x3; 3x3 max pool-1x1), concatenated."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
    ) -> None:
        super().__init__()
        d = spatial_dims
        self.branch1 = _BasicConv(d, in_channels, ch1x1, 1)
        self.branch2 = nn.Sequential(_BasicConv(d, in_channels, ch3x3red, 1), _BasicConv(d, ch3x3red, ch3x3, 3))
        self.branch3 = nn.Sequential(_BasicConv(d, in_channels, ch5x5red, 1), _BasicConv(d, ch5x5red, ch5x5, 3))
        self.branch4 = nn.Sequential(same_max_pool(d, 3, 1), _BasicConv(d, in_channels, pool_proj, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Concatenate the branch outputs along channels."""
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionV1(nn.Module):
    """Inception-v1 (GoogLeNet without auxiliary heads) in 2D, or I3D in 3D.

    Parameters
    ----------
    spatial_dims : int
        2 for slices ``(N, C, H, W)``, 3 for volumes ``(N, C, D, H, W)``.
    in_channels : int
        Input channels (3 in the thesis; T§3.3.3).
    out_channels : int or None
        Outputs of the final linear layer; ``None`` builds the 1024-feature backbone.
    dropout : float
        Dropout probability before the final layer (0.5 in pytorch-i3d, 0.2 in torchvision).
    gradient_checkpointing : bool
        Recompute every Inception module in the backward pass instead of storing activations.

    Raises
    ------
    ValueError
        For ``spatial_dims`` other than 2 or 3, non-positive channels, or dropout outside [0, 1).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int | None,
        *,
        dropout: float = 0.5,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        if in_channels < 1 or (out_channels is not None and out_channels < 1):
            raise ValueError(f"channel counts must be positive, got in {in_channels}, out {out_channels}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        d = spatial_dims
        self.spatial_dims = spatial_dims
        self.conv1 = _BasicConv(d, in_channels, 64, 7, 2)
        self.maxpool1 = same_max_pool(d, (1, 3, 3) if d == 3 else 3, (1, 2, 2) if d == 3 else 2)
        self.conv2 = _BasicConv(d, 64, 64, 1)
        self.conv3 = _BasicConv(d, 64, 192, 3)
        self.maxpool2 = same_max_pool(d, (1, 3, 3) if d == 3 else 3, (1, 2, 2) if d == 3 else 2)
        for name, *channels in INCEPTION_V1_BLOCKS:
            self.add_module(name, _Inception(d, *channels))
            if name == "inception3b":
                self.maxpool3 = same_max_pool(d, 3, 2)
            elif name == "inception4e":
                self.maxpool4 = same_max_pool(d, 2, 2)
        self.avgpool: nn.Module = nn.AdaptiveAvgPool3d(1) if d == 3 else nn.AdaptiveAvgPool2d(1)
        self.num_features = NUM_FEATURES
        self.dropout = nn.Dropout(dropout) if out_channels is not None else None
        self.fc = nn.Linear(NUM_FEATURES, out_channels) if out_channels is not None else None
        self.gradient_checkpointing = gradient_checkpointing

    def _stage(self, module: nn.Module, x: Tensor) -> Tensor:
        """Run one Inception module, checkpointed when training with checkpointing on."""
        if self.gradient_checkpointing and self.training and x.requires_grad:
            out: Tensor = cp.checkpoint(module, x, use_reentrant=False)
            return out
        result: Tensor = module(x)
        return result

    def feature_map(self, x: Tensor) -> Tensor:
        """The output of ``inception5b``, before global pooling (1024 channels)."""
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
        for name, *_ in INCEPTION_V1_BLOCKS:
            x = self._stage(getattr(self, name), x)
            if name == "inception3b":
                x = self.maxpool3(x)
            elif name == "inception4e":
                x = self.maxpool4(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, out_channels)``, or pooled features ``(N, 1024)`` without a head."""
        pooled: Tensor = self.avgpool(self.feature_map(x)).flatten(1)
        if self.fc is None or self.dropout is None:
            return pooled
        out: Tensor = self.fc(self.dropout(pooled))
        return out
