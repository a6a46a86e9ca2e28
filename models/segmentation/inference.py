"""Running a segmentation network on a preprocessed volume, and returning to the CT's resolution.

The inferer is chosen apart from the network (house rule 4, after MONAI's ``Inferer``): the
patch-based networks use MONAI's sliding-window inferer with Gaussian blending, which is what
nnU-Net does (windows weighted by a Gaussian of sigma 1/8 of the patch, so that window borders,
where a convolutional network sees least context, count least); a network trained on whole
resized volumes (the S4 U-Net) uses MONAI's ``SimpleInferer``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers.inferer import Inferer, SlidingWindowInferer
from torch import nn

from models.device import inference_context, to_device

__all__ = ["GAUSSIAN_SIGMA_SCALE", "argmax_on_grid", "predict_probabilities", "sliding_window_inferer"]

#: Gaussian sigma of the blending weights as a fraction of the patch (nnU-Net v1: 1/8).
GAUSSIAN_SIGMA_SCALE = 0.125


def sliding_window_inferer(patch: Sequence[int], overlap: float, batch_size: int = 1) -> SlidingWindowInferer:
    """MONAI sliding-window inferer with nnU-Net's Gaussian blending.

    Parameters
    ----------
    patch : sequence of int
        Window size (z, y, x); must suit the network (e.g. divisible by its strides).
    overlap : float
        Fraction of overlap between neighbouring windows in ``[0, 1)`` (nnU-Net: 0.5).
    batch_size : int
        Windows per forward pass.
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if batch_size < 1 or any(int(p) < 1 for p in patch):
        raise ValueError(f"patch sizes and batch_size must be positive, got {tuple(patch)}, {batch_size}")
    return SlidingWindowInferer(
        roi_size=tuple(int(p) for p in patch),
        sw_batch_size=batch_size,
        overlap=overlap,
        mode="gaussian",
        sigma_scale=GAUSSIAN_SIGMA_SCALE,
        padding_mode="constant",
        cval=0.0,
    )


def predict_probabilities(
    network: nn.Module, image: torch.Tensor, inferer: Inferer, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Class probabilities ``[classes, z, y, x]`` (softmax, float32, on the CPU) of one volume.

    The network is put in evaluation mode and moved to ``device`` (a worker keeps one network per
    process and device, so the move happens once).

    Parameters
    ----------
    network : torch.nn.Module
        Returns logits ``[batch, classes, z, y, x]``.
    image : torch.Tensor
        Preprocessed ``[channels, z, y, x]`` input.
    inferer : monai.inferers.Inferer
        How to apply the network (sliding window or whole volume).
    device : torch.device or str
        Where the network runs.
    """
    if image.ndim != 4:
        raise ValueError(f"image must be [channels, z, y, x], got shape {tuple(image.shape)}")
    network.eval()
    target = torch.device(device)
    network.to(target)
    with inference_context(target, bf16=False):  # the masks' published arithmetic: float32 everywhere
        logits = inferer(to_device(image[None], target), network)
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"the inferer returned {type(logits).__name__}, expected a tensor")
        return torch.softmax(logits.float(), dim=1)[0].cpu()


def argmax_on_grid(probabilities: torch.Tensor, shape: Sequence[int], channels: Sequence[int]) -> np.ndarray:
    """Position in ``channels`` of the most probable of those channels, on a grid of ``shape``.

    Each channel is interpolated (trilinear, voxel edges aligned, matching the preprocessing's
    resampling) to ``shape`` on its own and compared with the running maximum, so memory stays at
    a few volumes of ``shape`` however many classes there are.  Restricting the comparison to
    ``channels`` is how the lobe post-processing allows only left lobes in the left lung.

    Parameters
    ----------
    probabilities : torch.Tensor
        ``[classes, z, y, x]`` on the network grid.
    shape : sequence of int
        Target ``[z, y, x]`` shape (the cropped CT grid).
    channels : sequence of int
        Channels competing for each voxel (at most 127).

    Returns
    -------
    numpy.ndarray
        int8 array of ``shape`` with values ``0 .. len(channels) - 1``.
    """
    if not channels or len(channels) > 127:
        raise ValueError(f"need 1 to 127 channels, got {len(channels)}")
    size = tuple(int(s) for s in shape)
    best: torch.Tensor | None = None
    choice = torch.zeros(size, dtype=torch.int8)
    for position, channel in enumerate(channels):
        plane = probabilities[channel][None, None]
        upsampled = F.interpolate(plane, size=size, mode="trilinear", align_corners=False)[0, 0]
        if best is None:
            best = upsampled
            continue
        better = upsampled > best
        choice[better] = position
        best = torch.maximum(best, upsampled)
    out: np.ndarray = choice.numpy()
    return out
