"""Dimension-generic layers shared by the zoo's networks.

The zoo builds every architecture in 2D and in 3D from one class (thesis section 3.3.2 compares
"vanilla 2D and 3D versions" of each), so the layer choice is a function of ``spatial_dims``.
Three padding behaviours of the reference implementations need layers of their own, because
they change numbers, not just names:

* TensorFlow "SAME" padding (output size ``ceil(n / stride)``, the extra pixel at the end), which
  the Inception-v1 / I3D reference (piergiaj/pytorch-i3d ``Unit3D``, ``MaxPool3dSamePadding``)
  computes from the input size at run time;
* replication padding along depth for the 3x3x3 convolutions of the inflated DenseNet
  (hassony2/inflated_convnets_pytorch ``_DenseLayer3d``), which keeps a volume that is constant
  along depth constant up to the last layer, so inflated 2D weights reproduce the 2D features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DepthReplicationConv3d",
    "SameConv2d",
    "SameConv3d",
    "SameMaxPool2d",
    "SameMaxPool3d",
    "as_tuple",
    "avg_pool",
    "batch_norm",
    "check_spatial_dims",
    "conv",
    "max_pool",
    "same_conv",
    "same_max_pool",
    "same_padding",
]

_SPATIAL_DIMS = (2, 3)


def check_spatial_dims(spatial_dims: int) -> None:
    """Raise ``ValueError`` unless ``spatial_dims`` is 2 or 3 (the two variants of T§3.3.2)."""
    if spatial_dims not in _SPATIAL_DIMS:
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")


def as_tuple(value: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    """``value`` repeated ``spatial_dims`` times, or the sequence checked to have that length."""
    if isinstance(value, int):
        return (value,) * spatial_dims
    result = tuple(int(v) for v in value)
    if len(result) != spatial_dims:
        raise ValueError(f"expected {spatial_dims} values, got {result}")
    return result


def conv(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    bias: bool = False,
) -> nn.Conv2d | nn.Conv3d:
    """A plain ``Conv2d``/``Conv3d`` (zero padding), bias off by default as after BatchNorm."""
    kernel = as_tuple(kernel_size, spatial_dims)
    strides = as_tuple(stride, spatial_dims)
    pads = as_tuple(padding, spatial_dims)
    if spatial_dims == 3:
        return nn.Conv3d(in_channels, out_channels, kernel, strides, pads, bias=bias)  # type: ignore[arg-type]
    return nn.Conv2d(in_channels, out_channels, kernel, strides, pads, bias=bias)  # type: ignore[arg-type]


def batch_norm(spatial_dims: int, channels: int, eps: float = 1e-5) -> nn.BatchNorm2d | nn.BatchNorm3d:
    """``BatchNorm2d``/``BatchNorm3d`` with affine parameters (counted in Table 3.3 for 3D only)."""
    return nn.BatchNorm3d(channels, eps=eps) if spatial_dims == 3 else nn.BatchNorm2d(channels, eps=eps)


def max_pool(
    spatial_dims: int, kernel_size: int | Sequence[int], stride: int | Sequence[int], padding: int | Sequence[int] = 0
) -> nn.MaxPool2d | nn.MaxPool3d:
    """``MaxPool2d``/``MaxPool3d`` (implicit -inf padding)."""
    kernel = as_tuple(kernel_size, spatial_dims)
    strides = as_tuple(stride, spatial_dims)
    pads = as_tuple(padding, spatial_dims)
    if spatial_dims == 3:
        return nn.MaxPool3d(kernel, strides, pads)
    return nn.MaxPool2d(kernel, strides, pads)


def avg_pool(
    spatial_dims: int, kernel_size: int | Sequence[int], stride: int | Sequence[int]
) -> nn.AvgPool2d | nn.AvgPool3d:
    """``AvgPool2d``/``AvgPool3d`` without padding (DenseNet transitions)."""
    kernel = as_tuple(kernel_size, spatial_dims)
    strides = as_tuple(stride, spatial_dims)
    if spatial_dims == 3:
        return nn.AvgPool3d(kernel, strides)  # type: ignore[arg-type]
    return nn.AvgPool2d(kernel, strides)  # type: ignore[arg-type]


def same_padding(size: Sequence[int], kernel: Sequence[int], stride: Sequence[int]) -> list[int]:
    """``F.pad`` amounts (last axis first) for TensorFlow "SAME" padding.

    Per axis the total is ``max(k - s, 0)`` when the size is a multiple of the stride and
    ``max(k - n % s, 0)`` otherwise; the smaller half goes in front (piergiaj/pytorch-i3d
    ``compute_pad``), which puts the extra pixel of an even kernel or strided window at the end.
    """
    pads: list[int] = []
    for n, k, s in reversed(list(zip(size, kernel, stride, strict=True))):
        total = max(k - s, 0) if n % s == 0 else max(k - n % s, 0)
        pads.extend((total // 2, total - total // 2))
    return pads


class SameConv2d(nn.Conv2d):
    """``Conv2d`` with run-time TensorFlow "SAME" zero padding (see :func:`same_padding`)."""

    def forward(self, input: Tensor) -> Tensor:
        """Pad for "SAME" output size, then convolve."""
        pads = same_padding(input.shape[2:], self.kernel_size, self.stride)
        out: Tensor = self._conv_forward(F.pad(input, pads), self.weight, self.bias)
        return out


class SameConv3d(nn.Conv3d):
    """``Conv3d`` with run-time TensorFlow "SAME" zero padding (see :func:`same_padding`)."""

    def forward(self, input: Tensor) -> Tensor:
        """Pad for "SAME" output size, then convolve."""
        pads = same_padding(input.shape[2:], self.kernel_size, self.stride)
        out: Tensor = self._conv_forward(F.pad(input, pads), self.weight, self.bias)
        return out


class SameMaxPool2d(nn.MaxPool2d):
    """``MaxPool2d`` with run-time "SAME" zero padding, as ``MaxPool3dSamePadding`` of the I3D code.

    Zero padding equals the usual -inf padding here because every Inception pooling input has
    passed a ReLU; the FLOP convention counts the unpadded input, which a module that pads
    inside its own ``forward`` reproduces.
    """

    def forward(self, input: Tensor) -> Tensor:
        """Pad for "SAME" output size, then pool."""
        kernel = as_tuple(self.kernel_size, 2)
        stride = as_tuple(self.stride, 2)
        out: Tensor = super().forward(F.pad(input, same_padding(input.shape[2:], kernel, stride)))
        return out


class SameMaxPool3d(nn.MaxPool3d):
    """``MaxPool3d`` with run-time "SAME" zero padding (piergiaj/pytorch-i3d ``MaxPool3dSamePadding``)."""

    def forward(self, input: Tensor) -> Tensor:
        """Pad for "SAME" output size, then pool."""
        kernel = as_tuple(self.kernel_size, 3)
        stride = as_tuple(self.stride, 3)
        out: Tensor = super().forward(F.pad(input, same_padding(input.shape[2:], kernel, stride)))
        return out


def _static_same(kernel: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """True when "SAME" padding is the symmetric ``k // 2`` for every input size."""
    return all(s == 1 for s in stride) and all(k % 2 == 1 for k in kernel)


def same_conv(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
) -> nn.Conv2d | nn.Conv3d:
    """A bias-free convolution with "SAME" padding.

    Stride-1 odd kernels get the equivalent static symmetric padding, so the common case costs no
    padded copy of the input; strided or even kernels pad at run time.
    """
    kernel = as_tuple(kernel_size, spatial_dims)
    strides = as_tuple(stride, spatial_dims)
    if _static_same(kernel, strides):
        return conv(spatial_dims, in_channels, out_channels, kernel, strides, tuple(k // 2 for k in kernel))
    if spatial_dims == 3:
        return SameConv3d(in_channels, out_channels, kernel, strides, 0, bias=False)  # type: ignore[arg-type]
    return SameConv2d(in_channels, out_channels, kernel, strides, 0, bias=False)  # type: ignore[arg-type]


def same_max_pool(
    spatial_dims: int, kernel_size: int | Sequence[int], stride: int | Sequence[int]
) -> nn.MaxPool2d | nn.MaxPool3d:
    """Max pooling with "SAME" padding, static for stride 1 and odd kernels (non-negative inputs)."""
    kernel = as_tuple(kernel_size, spatial_dims)
    strides = as_tuple(stride, spatial_dims)
    if _static_same(kernel, strides):
        return max_pool(spatial_dims, kernel, strides, tuple(k // 2 for k in kernel))
    if spatial_dims == 3:
        return SameMaxPool3d(kernel, strides)
    return SameMaxPool2d(kernel, strides)


class DepthReplicationConv3d(nn.Conv3d):
    """``Conv3d`` that pads depth by replication and height/width by zeros.

    This is the 3x3x3 dense-layer convolution of the inflated DenseNet (hassony2
    ``_DenseLayer3d`` with ``inflate_block_convs=True``: ``ReplicationPad3d`` on time, then a
    convolution with spatial zero padding).  ``padding`` must be ``(0, p, p)``; the depth
    padding ``kernel_size[0] // 2`` is replicated.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int, int]) -> None:
        if kernel_size[0] % 2 != 1:
            raise ValueError(f"the depth kernel must be odd for symmetric replication, got {kernel_size}")
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=1,
            padding=(0, kernel_size[1] // 2, kernel_size[2] // 2),
            bias=False,
        )
        self.depth_padding = kernel_size[0] // 2

    def forward(self, input: Tensor) -> Tensor:
        """Replicate the first and last slices, then convolve."""
        p = self.depth_padding
        out: Tensor = self._conv_forward(F.pad(input, (0, 0, 0, 0, p, p), mode="replicate"), self.weight, self.bias)
        return out
