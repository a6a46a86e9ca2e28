"""Parameter and FLOP counts of a network, computed without allocating its weights.

The thesis reports model cost as parameters and FLOPs per forward pass (T§3.4.5 for the lesion
nnU-Net: 29.69 x 10^6 parameters, 9.41 x 10^11 FLOPs per patch).  Building a full-size 3D
network on ``torch.device("meta")`` allocates nothing, and a forward pass there only propagates
shapes, so both counts take milliseconds and no memory; ``lungcds models summary`` can use them.

FLOP convention (stated because published numbers differ by convention): 2 x multiply-accumulates
of every convolution, transposed convolution and linear layer, so one MAC is two FLOPs.  Bias
additions, normalisation, activations, pooling, interpolation and concatenation are *not* in
``FlopCount.flops``; they are counted separately as elementwise operations in
``FlopCount.elementwise`` (normalisation 2 per output element, activation 1, the ptflops
convention) so that a reader can add them when comparing with a ptflops-style figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from models.zoo.flops import count_parameters

__all__ = ["FlopCount", "count_flops", "count_parameters"]

_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU)


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one forward pass.

    Attributes
    ----------
    input_shape : tuple of int
        ``[batch, channels, *spatial]`` the count is for.
    macs : int
        Multiply-accumulates of convolutions, transposed convolutions and linear layers.
    flops : int
        ``2 * macs`` (the convention of this module).
    elementwise : int
        Normalisation (2 per element) and activation (1 per element) operations, not in ``flops``.
    """

    input_shape: tuple[int, ...]
    macs: int
    flops: int
    elementwise: int


def _macs(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = math.prod(module.kernel_size)
        if module.transposed:
            # Every input element is multiplied into a kernel for every output channel.
            return inputs[0].numel() * module.out_channels * kernel // module.groups
        return output.numel() * (module.in_channels // module.groups) * kernel
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def count_flops(network: nn.Module, input_shape: Sequence[int]) -> FlopCount:
    """FLOPs of one forward pass on an input of ``input_shape``, counted on the meta device.

    Parameters
    ----------
    network : torch.nn.Module
        Any network; the forward hooks are removed again and its training mode restored.  Build
        it on ``torch.device("meta")`` to count a full-size network without memory.
    input_shape : sequence of int
        ``[batch, channels, *spatial]``.

    Returns
    -------
    FlopCount
        The counts, under the convention in the module docstring.
    """
    totals = {"macs": 0, "elementwise": 0}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        totals["macs"] += _macs(module, inputs, output)
        if isinstance(module, _NORMS):
            totals["elementwise"] += 2 * output.numel()
        elif isinstance(module, _ACTIVATIONS):
            totals["elementwise"] += output.numel()

    handles = [m.register_forward_hook(hook) for m in network.modules() if not list(m.children())]
    device = next(network.parameters()).device
    was_training = network.training
    try:
        network.eval()
        with torch.no_grad():
            network(torch.empty(tuple(input_shape), device=device))
    finally:
        network.train(was_training)
        for handle in handles:
            handle.remove()
    return FlopCount(
        input_shape=tuple(int(s) for s in input_shape),
        macs=totals["macs"],
        flops=2 * totals["macs"],
        elementwise=totals["elementwise"],
    )
