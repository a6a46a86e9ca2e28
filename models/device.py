"""Where the learned models run: one way to copy their inputs there and one context to run them in.

Every learned model of a worker (CO-RADS, I3Dr, each STOIC2021 member) runs on the torch device
the site configured (``LUNGCDS_DEVICE``, passed down by :class:`models.runtime.ModelProvider`),
while its inputs are prepared on the host (numpy, SimpleITK, MONAI).  So each forward pass starts
with a host-to-device copy, and all of them go through :func:`to_device`:

* on CUDA the tensor is copied into pinned (page-locked) host memory and sent with
  ``non_blocking=True``, so the transfer is a DMA the GPU queues instead of a synchronous copy out of
  pageable memory; the ``.cpu()`` or ``.item()`` that reads the result back waits for it;
* on any other device (the CPU, or the meta device the tests build on) it is a plain ``.to``,
  which on the CPU returns the tensor itself: the numbers are exactly those of before.

:func:`folded_for_inference` is the copy of a placed network that a prediction runs: its
BatchNorms folded into the convolutions before them, the placed network left as loaded.

:func:`inference_context` is the one place that decides the arithmetic of a forward pass:
``torch.inference_mode`` always and, on CUDA only, bfloat16 autocast where the caller says that is
safe.  Only CO-RADS does (our own reimplementation, bfloat16 since it was written), whose network
ends in logits a sigmoid turns into a probability.  The STOIC2021 members stay in float32 on every
device: their published checkpoints are verified equal to their authors' code in float32 (on the
CPU), and bfloat16 keeps about three significant digits, enough to move a probability near a
threshold away from what the authors' code gives.  I3Dr and the lobe and lesion masks stay in
float32 too: I3Dr's outputs are measurements (litres, mL/min/mmHg) whose ratio ``y_A / y_B`` is
taken and whose ``y_B`` is compared with a vanishing threshold.  On the CPU autocast is never on,
so CPU results do not change.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Iterator
from typing import TypeVar

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["folded_for_inference", "inference_context", "memory_format_for", "place_network", "to_device"]

NetworkT = TypeVar("NetworkT", bound=nn.Module)


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` on ``device``: from pinned memory without blocking on CUDA, a plain ``.to`` elsewhere.

    Only a host tensor is pinned (pinning is a host-memory operation); one already on a GPU moves
    with a plain ``.to``.
    """
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


@contextlib.contextmanager
def inference_context(device: torch.device, *, bf16: bool) -> Iterator[None]:
    """``torch.inference_mode``, with bfloat16 autocast when ``bf16`` and ``device`` is CUDA.

    ``bf16`` is the caller's statement that reduced precision is safe for its network (module
    docstring); it has no effect off CUDA.
    """
    autocast = bf16 and device.type == "cuda"
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        yield


def memory_format_for(network: nn.Module) -> torch.memory_format:
    """Channels last for a convolutional network (3-D or 2-D), the default (contiguous) layout otherwise.

    oneDNN's convolutions run faster with channels last, and their outputs match the default
    layout's within float rounding (``benchmarks/channels_last.py``, interleaved passes on this
    2-core CPU, ratio of medians default / channels-last, two runs where two are given): a CO-RADS
    DenseNet-201 1.21 and 1.44, a Flying Bird ResNet 1.48 and 1.46, a Code 1055 ConvNeXt 1.24 and
    1.24, the I3Dr backbone 1.68 and 1.67, hal9000's MobileNetV3 and ResNet-18 on 32 slices 1.54
    and 1.38 (largest output differences at most 3e-7).  simon.j's ViT, whose one convolution is
    its patch embedding, is the same either way (0.98).  The lobe and lesion U-Nets gained nothing
    (0.93 and 1.06, 0.91 and 0.99) and keep the default layout: their sliding window calls them
    with patches cut from the volume, not through here.
    """
    modules = list(network.modules())
    if any(isinstance(module, nn.Conv3d) for module in modules):
        return torch.channels_last_3d
    if any(isinstance(module, nn.Conv2d) for module in modules):
        return torch.channels_last
    return torch.contiguous_format


def place_network(network: NetworkT, device: torch.device) -> NetworkT:
    """``network`` on ``device`` in the layout of :func:`memory_format_for` (the move happens once per model)."""
    # Module.to accepts memory_format at run time; torch's stubs do not list it.
    placed: NetworkT = network.to(device, memory_format=memory_format_for(network))  # type: ignore[call-overload]
    return placed


def folded_for_inference(network: NetworkT) -> NetworkT:
    """A copy of ``network`` with every BatchNorm that normalises a convolution's output folded into it.

    In eval mode ``bn(conv(x))`` is one convolution with per-channel scaled weights and a bias
    (torch's ``fuse_conv_bn_eval``): one pass over the activations fewer per pair, the same function
    to float rounding.  Measured on this 2-core CPU (``benchmarks/folded_batchnorm.py``, ratio of
    medians unfolded / folded, channels last): hal9000's MobileNetV3 1.64 and ResNet-18 1.16, a
    Flying Bird ResNet 1.16, the I3Dr backbone 1.00 and 1.05; in the whole pipeline the STOIC2021
    stage took 264 s instead of 293 s and I3Dr 51 s instead of 58 s (``benchmarks/README.md``).
    Those three use it.  CO-RADS does not: its DenseNet-201s are pre-activation (only the second
    of each dense layer's two BatchNorms follows a convolution), the gain was 0.98-1.20 between
    runs and 1.02 with the copy included, and the copy costs 0.17 s per member.

    A *copy*, made by the caller per prediction and dropped after it: the placed network is also
    what a member's weights are saved from, what training continues from and what the importers
    compare with the authors' checkpoints, and a folded network has other tensors (``conv.bias``
    instead of ``bn.*``).  The cost is one network's weights at a time and a copy of tens of
    milliseconds against passes of seconds.  ``network`` itself is returned when nothing folds.

    Which pairs fold is known, not guessed from the order modules were registered in: consecutive
    ``(convolution, BatchNorm)`` steps of an ``nn.Sequential`` (its forward feeds one to the next
    and to nothing else), and the ``(convolution, BatchNorm)`` attribute pairs a class lists in
    ``BATCHNORM_AFTER_CONV`` because its forward computes ``bn(conv(x))`` and uses ``conv(x)`` for
    nothing else.  A BatchNorm without running statistics is left alone.

    Raises
    ------
    ValueError
        For a network in training mode (batch statistics cannot be folded).
    """
    if network.training:
        raise ValueError("BatchNorm is folded only for a network in eval mode")
    if not any(_foldable_pairs(module) for module in network.modules()):
        return network
    copied = copy.deepcopy(network)
    for module in list(copied.modules()):
        for conv_name, norm_name in _foldable_pairs(module):
            convolution, norm = module.get_submodule(conv_name), module.get_submodule(norm_name)
            assert isinstance(convolution, nn.modules.conv._ConvNd)
            assert isinstance(norm, nn.modules.batchnorm._BatchNorm)
            setattr(module, conv_name, fuse_conv_bn_eval(convolution, norm))
            setattr(module, norm_name, nn.Identity())
    # Module.to accepts memory_format at run time; torch's stubs do not list it.
    laid_out: NetworkT = copied.to(memory_format=memory_format_for(network))  # type: ignore[call-overload]
    return laid_out


def _foldable_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """The ``(convolution, BatchNorm)`` child names of ``module`` whose forward is ``bn(conv(x))``."""
    pairs = list(getattr(type(module), "BATCHNORM_AFTER_CONV", ()))
    if isinstance(module, nn.Sequential):
        pairs += [
            (first, second)
            for (first, a), (second, b) in itertools.pairwise(module.named_children())
            if isinstance(a, nn.modules.conv._ConvNd) and isinstance(b, nn.modules.batchnorm._BatchNorm)
        ]
    children = dict(module.named_children())
    return [
        (conv, norm)
        for conv, norm in pairs
        if isinstance(children.get(norm), nn.modules.batchnorm._BatchNorm) and children[norm].track_running_stats
    ]
