"""The S4 3D U-Net: an 18-layer 3D ResNet encoder (R3D-18 of Tran et al.) and a U-Net decoder.

Source: seed S4 §2.3 and its Fig. 1.  The encoder is "an 18-layer 3D ResNet, as described by Tran
et al., pretrained on the Kinetics-400 dataset", fully connected layer removed; the input is the
CT repeated to three channels because the encoder was pretrained on colour video.  R3D-18 (the
layout of torchvision's ``r3d_18``, whose layer shapes this module reproduces and whose
state-dict keys it keeps, so Kinetics-400 weights load into :attr:`ResNet18UNet.encoder`):

* stem: conv 3x7x7, stride (1, 2, 2), 64 channels, BatchNorm, ReLU;
* four stages of two basic blocks (two 3x3x3 convs with BatchNorm; ReLU after the sum), 64, 128,
  256 and 512 channels; stages 2-4 start with stride 2 in all three axes and a 1x1x1 strided
  projection on the shortcut.

Decoder (S4 §2.3, Fig. 1): the deepest features pass a double convolution, then four upscaling
blocks, each a transposed convolution and two convolutions that also receive the skip features,
"each convolutional layer followed by a ReLU" and "instance normalization applied to the lower
layer features before the double convolution"; the final block is "a single residual block
without dilation and a single convolutional layer with a kernel size and stride of one".

What the paper leaves open, and what this module chooses (none of it changes the published
facts above):

* channel widths follow the rule of fastai's ``DynamicUnet`` (the paper used fastai 2.1.10; the
  authors' 3-D port of it is the ``faimed3d`` library): the middle double convolution widens to
  twice the encoder width and back (512 -> 1024 -> 512); a transposed convolution halves the
  channels; a block's convolutions keep the width of the concatenation, except the last block,
  which halves it;
* the four skips are the outputs of encoder stages 3, 2 and 1 and, for the fourth block, the
  input itself (fastai's "last cross"), because stage 1 and the stem already share a resolution;
* transposed convolutions have kernel = stride: 2x2x2, and 1x2x2 for the last block, which undoes
  the stem's in-plane-only stride;
* when an input size is not divisible by the strides, the upsampled map is resized (nearest) to
  the skip's size, as fastai's U-Net block does;
* the output has two channels (background, infiltrate) for the softmax of the Dice +
  cross-entropy loss (S4 §2.4, one "infiltrate" class).

The paper reports no parameter count.  This reading has 90 531 312 parameters (encoder 33 166 272,
exactly torchvision's ``r3d_18`` without its classifier; middle double convolution 28 313 088;
decoder, residual block and head 29 051 952) and costs 5.34e12 FLOPs (2 x MACs of the
convolutions) on one 3x20x256x256 input.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["R3D18_WIDTHS", "R3D18Encoder", "ResNet18UNet"]

#: Channel widths of the four R3D-18 stages (Tran et al.; torchvision ``r3d_18``).
R3D18_WIDTHS: tuple[int, int, int, int] = (64, 128, 256, 512)


class _BasicBlock(nn.Module):
    """R3D basic block; ``conv1``/``conv2``/``downsample`` keep torchvision's key names."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
        )
        self.conv2 = nn.Sequential(
            nn.Conv3d(out_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm3d(out_channels),
        )
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm3d(out_channels),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual sum, then ReLU."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out: torch.Tensor = self.relu(self.conv2(self.conv1(x)) + shortcut)
        return out


class R3D18Encoder(nn.Module):
    """The R3D-18 feature extractor without pooling and classifier.

    Parameters
    ----------
    in_channels : int
        3 for Kinetics-400 weights (grey CT repeated, S4 Fig. 1).

    Notes
    -----
    :meth:`forward` returns the outputs of the four stages (strides (1,2,2), (2,4,4), (4,8,8),
    (8,16,16) relative to the input), the skip features of the decoder.
    """

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}")
        self.in_channels = in_channels
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, 64, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False),
            nn.BatchNorm3d(64),
            nn.ReLU(inplace=True),
        )
        previous = 64
        for index, width in enumerate(R3D18_WIDTHS, start=1):
            stride = 1 if index == 1 else 2
            self.add_module(
                f"layer{index}", nn.Sequential(_BasicBlock(previous, width, stride), _BasicBlock(width, width, 1))
            )
            previous = width

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of stages 1-4."""
        x = self.stem(x)
        features: list[torch.Tensor] = []
        for index in range(1, 5):
            x = getattr(self, f"layer{index}")(x)
            features.append(x)
        return features


def _conv_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3x3 convolution (with bias: the decoder has no normalisation after it) and ReLU."""
    return nn.Sequential(nn.Conv3d(in_channels, out_channels, 3, 1, 1), nn.ReLU(inplace=True))


class _UpBlock(nn.Module):
    """Transposed conv + ReLU; instance-normalised skip; concatenation; two conv + ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, stride: tuple[int, int, int]) -> None:
        super().__init__()
        up_channels = in_channels // 2
        self.up = nn.Sequential(nn.ConvTranspose3d(in_channels, up_channels, stride, stride), nn.ReLU(inplace=True))
        self.skip_norm = nn.InstanceNorm3d(skip_channels, affine=True)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = _conv_relu(up_channels + skip_channels, out_channels)
        self.conv2 = _conv_relu(out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Upsample ``x``, join it with the normalised ``skip`` and convolve twice."""
        up = self.up(x)
        if up.shape[2:] != skip.shape[2:]:
            up = F.interpolate(up, size=skip.shape[2:], mode="nearest")
        joined = self.relu(torch.cat((up, self.skip_norm(skip)), dim=1))
        out: torch.Tensor = self.conv2(self.conv1(joined))
        return out


class _ResidualBlock(nn.Module):
    """Two 3x3x3 convolutions with an identity shortcut (no dilation), ReLU after the sum."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv_relu(channels, channels)
        self.conv2 = nn.Conv3d(channels, channels, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(x + conv2(conv1(x)))``."""
        out: torch.Tensor = self.relu(x + self.conv2(self.conv1(x)))
        return out


class ResNet18UNet(nn.Module):
    """3D U-Net with an R3D-18 encoder (seed S4 §2.3).

    Parameters
    ----------
    spatial_dims : int
        Must be 3 (the encoder is a video network).
    in_channels : int
        Input channels; 3 to use Kinetics-400 encoder weights (S4 Fig. 1).
    out_channels : int
        Classes including background; the network returns logits.
    up_strides : sequence of tuple of int, optional
        Strides of the four transposed convolutions, deepest first; the default undoes the
        encoder's strides.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 3,
        out_channels: int = 2,
        up_strides: Sequence[tuple[int, int, int]] = ((2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2)),
    ) -> None:
        super().__init__()
        if spatial_dims != 3:
            raise ValueError(f"the R3D-18 encoder is 3-D only, got spatial_dims={spatial_dims}")
        if out_channels < 2:
            raise ValueError(f"out_channels must include background (at least 2), got {out_channels}")
        if len(up_strides) != 4 or any(len(s) != 3 or min(s) < 1 for s in up_strides):
            raise ValueError(f"need four 3-D upsampling strides, got {tuple(up_strides)}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.encoder = R3D18Encoder(in_channels)
        deepest = R3D18_WIDTHS[-1]
        self.middle = nn.Sequential(_conv_relu(deepest, 2 * deepest), _conv_relu(2 * deepest, deepest))
        skips = (R3D18_WIDTHS[2], R3D18_WIDTHS[1], R3D18_WIDTHS[0], in_channels)
        blocks: list[nn.Module] = []
        width = deepest
        for index, (skip, stride) in enumerate(zip(skips, up_strides, strict=True)):
            joined = width // 2 + skip
            out = joined if index < len(skips) - 1 else joined // 2
            blocks.append(_UpBlock(width, skip, out, stride))
            width = out
        self.decoder = nn.ModuleList(blocks)
        self.final = _ResidualBlock(width)
        self.head = nn.Conv3d(width, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, out_channels, z, y, x]`` at the input's size."""
        stage1, stage2, stage3, stage4 = self.encoder(x)
        y = self.middle(stage4)
        for block, skip in zip(self.decoder, (stage3, stage2, stage1, x), strict=True):
            y = block(y, skip)
        out: torch.Tensor = self.head(self.final(y))
        return out
