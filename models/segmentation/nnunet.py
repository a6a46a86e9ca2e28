"""An nnU-Net-v1-style U-Net ("Generic_UNet" layout), written for this project.

The CORADS-AI lesion model is "a 3D nnU-Net trained by Lessmann et al." (thesis T§3.3.3) with
29.69 x 10^6 parameters, 9.41 x 10^11 FLOPs per patch and 12.8 patches per test scan on average
(T§3.4.5).  nnU-Net v1 builds that network from a plan: a base of 30 features, doubled per stage
and capped at 320, so 30-60-120-240-320-320 for five poolings; every stage has two
convolution + instance norm + leaky ReLU blocks, downsampling is a strided first convolution
("convolutional pooling"), upsampling a transposed convolution with kernel = stride and no bias,
and every decoder stage has a 1x1x1 segmentation head (deep supervision).  With 3 classes
(background, ground-glass opacity, consolidation: the two lesion kinds named in T§3.3.3) that
gives 29.69 M parameters, which is how the published count pins this layout down (the models
spec, section 3).

The module hierarchy and parameter names follow nnU-Net v1's ``Generic_UNet`` state-dict keys
(``conv_blocks_context.0.blocks.0.conv.weight``, ``tu.0.weight``, ``seg_outputs.0.weight``, ...)
so that a converted nnU-Net v1 checkpoint loads without renaming.  The same class, with other
widths, serves as the lobe network (:mod:`models.segmentation.lobes`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "CORADS_NNUNET_FEATURES",
    "CORADS_NNUNET_PATCH",
    "CORADS_NNUNET_STRIDES",
    "GenericUNet",
]

#: Feature widths of the CORADS-AI lesion nnU-Net: nnU-Net v1 base 30, x2 per stage, cap 320
#: (models spec section 3; reproduces the 29.69 M parameters of T§3.4.5).
CORADS_NNUNET_FEATURES: tuple[int, ...] = (30, 60, 120, 240, 320, 320)
#: Patch (z, y, x) inferred from the published 9.41e11 FLOPs per patch (T§3.4.5): 64x192x192
#: is the nnU-Net-shaped patch nearest to it (models spec section 3; the paper gives no patch).
CORADS_NNUNET_PATCH: tuple[int, int, int] = (64, 192, 192)
#: Pooling strides (z, y, x): five 2x2x2 poolings.  With :data:`CORADS_NNUNET_FEATURES` and 3
#: classes this gives 29 695 280 parameters (+0.02 % of the published 29.69 M, T§3.4.5) and
#: 9.46e11 FLOPs on the 64x192x192 patch (+0.5 % of 9.41e11).  The alternatives nnU-Net's planner
#: could produce miss: a final 1x2x2 pooling (z pooled only four times) has 29.29 M parameters
#: (-1.4 %), a first 1x2x2 pooling (anisotropic spacing) costs 1.42e12 FLOPs per patch (+51 %).
#: Caveat: on 64 slices, five z poolings leave a 2x6x6 bottleneck, below the 4 voxels per axis
#: that nnU-Net v1's planner keeps; a 128x128x128 patch satisfies it with the same parameters
#: but 8.41e11 FLOPs (-11 %), so the published pair fits 64x192x192 better.
CORADS_NNUNET_STRIDES: tuple[tuple[int, ...], ...] = ((2, 2, 2),) * 5


_Triple = tuple[int, int, int]


def _triple(values: Sequence[int], what: str) -> _Triple:
    """Three positive ints (a 3-D kernel or stride)."""
    items = tuple(int(v) for v in values)
    if len(items) != 3 or min(items) < 1:
        raise ValueError(f"{what} must be three positive integers, got {tuple(values)}")
    return (items[0], items[1], items[2])


class _ConvNormNonlin(nn.Module):
    """Convolution (with bias), instance norm (affine, eps 1e-5), leaky ReLU (slope 0.01).

    The attribute names ``conv``, ``instnorm`` and ``lrelu`` are nnU-Net v1's, so its
    checkpoints map onto this module key for key.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: _Triple, stride: _Triple) -> None:
        super().__init__()
        padding = ((kernel[0] - 1) // 2, (kernel[1] - 1) // 2, (kernel[2] - 1) // 2)
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride, padding, bias=True)
        self.instnorm = nn.InstanceNorm3d(out_channels, eps=1e-5, affine=True)
        self.lrelu = nn.LeakyReLU(negative_slope=1e-2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve, normalise, activate."""
        out: torch.Tensor = self.lrelu(self.instnorm(self.conv(x)))
        return out


class _StackedConvs(nn.Module):
    """``count`` conv-norm-nonlin blocks; only the first one is strided (nnU-Net's pooling)."""

    def __init__(self, in_channels: int, out_channels: int, count: int, kernel: _Triple, first_stride: _Triple) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.blocks = nn.Sequential(
            *(
                _ConvNormNonlin(
                    in_channels if i == 0 else out_channels,
                    out_channels,
                    kernel,
                    first_stride if i == 0 else (1, 1, 1),
                )
                for i in range(count)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the blocks in order."""
        out: torch.Tensor = self.blocks(x)
        return out


class GenericUNet(nn.Module):
    """3-D U-Net with nnU-Net v1's ``Generic_UNet`` topology (convolutional pooling and upsampling).

    Parameters
    ----------
    spatial_dims : int
        Must be 3 (all networks of this project are volumetric).
    in_channels : int
        Input channels (1 for CT).
    out_channels : int
        Classes including background; the network returns logits.
    features : sequence of int
        Feature width of every resolution stage, from full resolution to the bottleneck; one
        more entry than ``strides``.
    strides : sequence of sequence of int
        Downsampling stride (z, y, x) between consecutive stages; the transposed convolutions use
        the same values as kernel and stride.
    kernel_sizes : sequence of sequence of int, optional
        Odd convolution kernel (z, y, x) per stage (default 3x3x3 everywhere); nnU-Net uses 1
        along an axis whose spacing is much coarser than the others.
    convs_per_stage : int
        Convolution blocks per stage (nnU-Net: 2).

    Notes
    -----
    A patch must be divisible by the product of the strides along each axis (:attr:`divisor`),
    and the bottleneck must keep more than one voxel, or instance norm has nothing to
    normalise.  :meth:`forward` returns only the full-resolution logits;
    :meth:`forward_deep_supervision` also returns the coarser heads, for training with deep
    supervision as nnU-Net does.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        features: Sequence[int],
        strides: Sequence[Sequence[int]],
        kernel_sizes: Sequence[Sequence[int]] | None = None,
        convs_per_stage: int = 2,
    ) -> None:
        super().__init__()
        if spatial_dims != 3:
            raise ValueError(f"only spatial_dims=3 is supported, got {spatial_dims}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}")
        if len(strides) < 1 or len(features) != len(strides) + 1:
            raise ValueError(f"need one more feature width than strides, got {len(features)} and {len(strides)}")
        if any(f < 1 for f in features):
            raise ValueError(f"feature widths must be positive, got {tuple(features)}")
        if convs_per_stage < 2:
            raise ValueError(f"convs_per_stage must be at least 2 (the bottleneck splits it), got {convs_per_stage}")
        pools = [_triple(s, "every stride") for s in strides]
        if kernel_sizes is None:
            kernels = [(3, 3, 3)] * len(features)
        elif len(kernel_sizes) != len(features):
            raise ValueError(f"need {len(features)} kernel sizes, got {len(kernel_sizes)}")
        else:
            kernels = [_triple(k, "every kernel size") for k in kernel_sizes]
        if any(k % 2 == 0 for kernel in kernels for k in kernel):
            raise ValueError(f"kernel sizes must be odd (same padding), got {kernels}")

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.features = tuple(int(f) for f in features)
        self.strides = tuple(pools)
        num_pool = len(pools)

        context: list[nn.Module] = []
        previous = in_channels
        for stage in range(num_pool):
            first = (1, 1, 1) if stage == 0 else pools[stage - 1]
            context.append(_StackedConvs(previous, self.features[stage], convs_per_stage, kernels[stage], first))
            previous = self.features[stage]
        # nnU-Net splits the bottleneck into two stacks (convs_per_stage - 1, then 1 block).
        bottom = self.features[-1]
        context.append(
            nn.Sequential(
                _StackedConvs(previous, bottom, convs_per_stage - 1, kernels[-1], pools[-1]),
                _StackedConvs(bottom, bottom, 1, kernels[-1], (1, 1, 1)),
            )
        )
        self.conv_blocks_context = nn.ModuleList(context)

        transposed: list[nn.Module] = []
        localization: list[nn.Module] = []
        heads: list[nn.Module] = []
        below = bottom
        for up in range(num_pool):
            skip = self.features[num_pool - 1 - up]
            stride = pools[num_pool - 1 - up]
            # nnU-Net v1 indexes the decoder kernels from the end of the list: kernels[-(up + 1)].
            kernel = kernels[len(kernels) - 1 - up]
            transposed.append(nn.ConvTranspose3d(below, skip, stride, stride, bias=False))
            localization.append(
                nn.Sequential(
                    _StackedConvs(2 * skip, skip, convs_per_stage - 1, kernel, (1, 1, 1)),
                    _StackedConvs(skip, skip, 1, kernel, (1, 1, 1)),
                )
            )
            heads.append(nn.Conv3d(skip, out_channels, 1, 1, 0, 1, 1, False))
            below = skip
        self.tu = nn.ModuleList(transposed)
        self.conv_blocks_localization = nn.ModuleList(localization)
        self.seg_outputs = nn.ModuleList(heads)

    @property
    def divisor(self) -> _Triple:
        """Per-axis factor every input size must be a multiple of (product of the strides)."""
        z, y, x = 1, 1, 1
        for sz, sy, sx in self.strides:
            z, y, x = z * sz, y * sy, x * sx
        return (z, y, x)

    def _decode(self, x: torch.Tensor, all_heads: bool) -> list[torch.Tensor]:
        skips: list[torch.Tensor] = []
        for block in self.conv_blocks_context[:-1]:
            x = block(x)
            skips.append(x)
        x = self.conv_blocks_context[-1](x)
        outputs: list[torch.Tensor] = []
        last = len(self.tu) - 1
        for up, (upsample, block, head) in enumerate(
            zip(self.tu, self.conv_blocks_localization, self.seg_outputs, strict=True)
        ):
            x = block(torch.cat((upsample(x), skips[-(up + 1)]), dim=1))
            if all_heads or up == last:
                outputs.append(head(x))
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Full-resolution logits ``[batch, out_channels, *spatial]``."""
        return self._decode(x, all_heads=False)[-1]

    def forward_deep_supervision(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every decoder stage, full resolution first (nnU-Net's deep supervision order)."""
        return self._decode(x, all_heads=True)[::-1]
